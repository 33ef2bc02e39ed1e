"""The seed model (`experiments/configs/seed_text_image.py`: LSTM text, conv image) on the
built-in `mm_shapes` with five fusions, 3 seeds each, and each run's robustness to a missing or
perturbed modality:

    mmjax sweep --config experiments/sweeps/mm_shapes_fusions.py --workdir runs/mm_shapes_fusions \\
        [--config.fixed.dataset.data_dir=DIR] [--config.fixed.total_steps=N]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "seed_text_image.py"),
                      {"config_arg": ("concat", "late", "gmu", "tensor", "low_rank"),
                       "seed": (0, 1, 2)},
                      ("test/accuracy",), steps=600, robustness=True)
