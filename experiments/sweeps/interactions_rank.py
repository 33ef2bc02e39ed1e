"""LMF's rank against a target of known bilinear rank: `interactions/rank6` (y = Σ_{i<6} s_a,i
s_b,i / √6 + noise, see mmjax/data/interactions.py) with LMF of output width 1 and rank 1 to 8, 3
seeds each. Eckart–Young puts rank r's test MSE at no less than 0.25 + max(6 − r, 0)/6, and
rank ≥ 6 can reach the Bayes MSE 0.25:

    mmjax sweep --config experiments/sweeps/interactions_rank.py --workdir runs/interactions_rank \\
        [--config.fixed.dataset.data_dir=DIR]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "interactions.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = ("rank6,low_rank",)
  sweep.axes.model = ml_collections.ConfigDict()
  sweep.axes.model.fusion = ml_collections.ConfigDict()
  sweep.axes.model.fusion.rank = (1, 2, 3, 4, 5, 6, 8)
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.total_steps = 2000
  sweep.fixed.eval_every_steps = 2000
  sweep.fixed.checkpoint_every_steps = 2000
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/label/mse",)
  sweep.curve = "model.fusion.rank"
  sweep.reference = ""
  return sweep
