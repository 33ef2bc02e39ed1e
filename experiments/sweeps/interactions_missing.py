"""Modality dropout on the interactions benchmark: does a multiplicative fusion keep the synergy
it learns when trained with modalities absent? Concat, TFN and LMF on `redundancy` and `synergy`,
plain and with modality dropout (each modality dropped with probability 0.3), 3 seeds, each cell
scored with only each subset of the modalities present:

    mmjax sweep --config experiments/sweeps/interactions_missing.py \\
        --workdir runs/interactions_missing [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "interactions.py"),
                      {"config_arg": tuple(f"{data},{fusion}{training}"
                                           for data in ("redundancy", "synergy")
                                           for fusion in ("concat", "tensor", "low_rank")
                                           for training in ("", ",dropout")),
                       "seed": (0, 1, 2)},
                      ("test/accuracy",), steps=1000, subsets=True)
