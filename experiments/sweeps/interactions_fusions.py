"""Every fusion on the interactions benchmark's four two-modality configs, 3 seeds each, through the
normal trainer:

    mmjax sweep --config experiments/sweeps/interactions_fusions.py \\
        --workdir runs/interactions_fusions \\
        [--config.fixed.dataset.data_dir=DIR] [--config.fixed.total_steps=N]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DATA = ("redundancy", "uniqueness", "synergy", "mixed")
FUSIONS = ("concat", "late", "sum", "mean", "max", "product", "gmu", "attention", "film", "tensor",
           "low_rank", "multiplicative", "mfb", "mult", "mbt")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "interactions.py"),
                      {"config_arg": tuple(f"{data},{fusion}" for data in DATA
                                           for fusion in FUSIONS),
                       "seed": (0, 1, 2)},
                      ("test/accuracy",), steps=1000)
