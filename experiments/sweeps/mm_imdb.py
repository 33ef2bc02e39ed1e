"""MM-IMDb, MultiBench's rows: text, image, late and early fusion and LRTF (low_rank), 3 seeds,
with MultiBench's micro/macro F1 beside ours (experiments/reference_results.json). Needs the
original files (see experiments/configs/mm_imdb.py):

    mmjax sweep --config experiments/sweeps/mm_imdb.py --workdir runs/mm_imdb \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "mm_imdb.py"),
                      {"config_arg": ("text", "image", "late", "concat", "low_rank"),
                       "seed": (0, 1, 2)},
                      ("test/genres/micro_f1", "test/genres/macro_f1"), reference="mm_imdb",
                      manual_dir=True)
