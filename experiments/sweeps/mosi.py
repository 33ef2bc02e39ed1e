"""CMU-MOSI, MultiBench's, the LMF paper's and MulT's rows: late and early fusion, TFN (tensor),
LMF (low_rank) and MulT (mult), 3 seeds, with the papers' numbers beside ours
(experiments/reference_results.json). Needs the original files (see experiments/configs/mosi.py):

    mmjax sweep --config experiments/sweeps/mosi.py --workdir runs/mosi \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "mosi.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = ("late", "concat", "tensor", "low_rank", "mult")
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.fixed.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/label/acc2_nonzero", "test/label/f1_nonzero", "test/label/mae",
                   "test/label/pearson", "test/label/acc7")
  sweep.reference = "cmu_mosi"
  return sweep
