"""Interaction order and sample efficiency: `interactions/synergy3` (the XOR of one bit of each of
three modalities, which no two modalities predict, see mmjax/data/interactions.py) through
additive (concat), pairwise (film: the conditioned modality scaled by a linear function of the
others) and higher-order fusions, trained on the first 500, 2,000 and 8,000 training examples,
3 seeds each:

    mmjax sweep --config experiments/sweeps/interactions_order.py --workdir runs/interactions_order \\
        [--config.fixed.dataset.data_dir=DIR]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
FUSIONS = ("concat", "film", "attention", "gmu", "product", "tensor", "low_rank", "mult")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "interactions.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = tuple(f"synergy3,{fusion}" for fusion in FUSIONS)
  sweep.axes.dataset = ml_collections.ConfigDict()
  sweep.axes.dataset.train_examples = (500, 2000, 8000)
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.total_steps = 1500
  sweep.fixed.eval_every_steps = 1500
  sweep.fixed.checkpoint_every_steps = 1500
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/accuracy",)
  sweep.curve = "dataset.train_examples"
  sweep.reference = ""
  return sweep
