"""AV-MNIST built from MNIST digits and FSDD recordings (`av_mnist/sources`): each modality alone
and four fusions, 3 seeds, with robustness. Needs the source files (see
experiments/configs/av_mnist.py; `../shared/data` holds them on the project's machines):

    mmjax sweep --config experiments/sweeps/av_mnist.py --workdir runs/av_mnist \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

import ml_collections

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  sweep.config_file = os.path.join(CONFIGS, "av_mnist.py")
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.config_arg = ("image", "audio", "concat", "late", "tensor", "low_rank")
  sweep.axes.seed = (0, 1, 2)
  sweep.fixed = ml_collections.ConfigDict()
  sweep.fixed.dataset = ml_collections.ConfigDict()
  sweep.fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  sweep.fixed.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  sweep.metrics = ("test/accuracy",)
  sweep.robustness = True
  sweep.reference = ""
  return sweep
