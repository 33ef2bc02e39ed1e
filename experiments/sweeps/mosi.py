"""CMU-MOSI, MultiBench's, the LMF paper's and MulT's rows: late and early fusion, TFN (tensor),
LMF (low_rank) and MulT (mult), 3 seeds, with the papers' numbers beside ours
(experiments/reference_results.json). Needs the original files (see experiments/configs/mosi.py):

    mmjax sweep --config experiments/sweeps/mosi.py --workdir runs/mosi \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "mosi.py"),
                      {"config_arg": ("late", "concat", "tensor", "low_rank", "mult"),
                       "seed": (0, 1, 2)},
                      ("test/label/acc2_nonzero", "test/label/f1_nonzero", "test/label/mae",
                       "test/label/pearson", "test/label/acc7"),
                      reference="cmu_mosi", manual_dir=True)
