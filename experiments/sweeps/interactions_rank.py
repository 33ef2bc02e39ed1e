"""LMF's rank against a target of known bilinear rank: `interactions/rank6` (y = Σ_{i<6} s_a,i
s_b,i / √6 + noise, see mmjax/data/interactions.py) with LMF of output width 1 and rank 1 to 8, 3
seeds each. Eckart–Young puts rank r's test MSE at no less than 0.25 + max(6 − r, 0)/6, and
rank ≥ 6 can reach the Bayes MSE 0.25:

    mmjax sweep --config experiments/sweeps/interactions_rank.py --workdir runs/interactions_rank \\
        [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "interactions.py"),
                      {"config_arg": ("rank6,low_rank",),
                       "model": {"fusion": {"rank": (1, 2, 3, 4, 5, 6, 8)}}, "seed": (0, 1, 2)},
                      ("test/label/mse",), steps=2000, curve="model.fusion.rank")
