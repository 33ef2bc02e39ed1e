"""Interaction order and sample efficiency: `interactions/synergy3` (the XOR of one bit of each of
three modalities, which no two modalities predict, see mmjax/data/interactions.py) through
additive (concat), pairwise (film: the conditioned modality scaled by a linear function of the
others) and higher-order fusions, trained on the first 500, 2,000 and 8,000 training examples,
3 seeds each:

    mmjax sweep --config experiments/sweeps/interactions_order.py \\
        --workdir runs/interactions_order [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
FUSIONS = ("concat", "film", "attention", "gmu", "product", "tensor", "low_rank")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "interactions.py"),
                      {"config_arg": tuple(f"synergy3,{fusion}" for fusion in FUSIONS),
                       "dataset": {"train_examples": (500, 2000, 8000)}, "seed": (0, 1, 2)},
                      ("test/accuracy",), steps=1500, curve="dataset.train_examples")
