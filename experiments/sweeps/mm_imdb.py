"""MM-IMDb, MultiBench's rows: text, image, late and early fusion and LRTF (low_rank), 3 seeds,
with MultiBench's micro/macro F1 beside ours (experiments/reference_results.json). Needs the
original files (see experiments/configs/mm_imdb.py):

    mmjax sweep --config experiments/sweeps/mm_imdb.py --workdir runs/mm_imdb \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "mm_imdb.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = ("text", "image", "late", "concat", "low_rank")
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.fixed.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/genres/micro_f1", "test/genres/macro_f1")
  sweep.reference = "mm_imdb"
  return sweep
