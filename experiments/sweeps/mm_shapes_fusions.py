"""The seed model (`experiments/configs/seed_text_image.py`: LSTM text, conv image) on the
built-in `mm_shapes` with five fusions, 3 seeds each, and each run's robustness to a missing or
perturbed modality:

    mmjax sweep --config experiments/sweeps/mm_shapes_fusions.py --workdir runs/mm_shapes_fusions \\
        [--config.fixed.dataset.data_dir=DIR] [--config.fixed.total_steps=N]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "seed_text_image.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = ("concat", "late", "gmu", "tensor", "low_rank")
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.total_steps = 600
  sweep.fixed.eval_every_steps = 600
  sweep.fixed.checkpoint_every_steps = 600
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/accuracy",)
  sweep.robustness = True
  sweep.reference = ""
  return sweep
