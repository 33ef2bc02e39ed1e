"""Every fusion on the interactions benchmark's four two-modality configs, 3 seeds each, through the
normal trainer:

    mmjax sweep --config experiments/sweeps/interactions_fusions.py --workdir runs/sweep \\
        [--config.fixed.dataset.data_dir=DIR] [--config.fixed.total_steps=N]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DATA = ("redundancy", "uniqueness", "synergy", "mixed")
FUSIONS = ("concat", "late", "sum", "mean", "max", "product", "gmu", "attention", "film", "tensor",
           "low_rank", "multiplicative", "mfb", "mult", "mbt")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "interactions.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = tuple(f"{data},{fusion}" for data in DATA for fusion in FUSIONS)
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.total_steps = 1000
  sweep.fixed.eval_every_steps = 1000
  sweep.fixed.checkpoint_every_steps = 1000
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/accuracy",)
  sweep.reference = ""
  return sweep
