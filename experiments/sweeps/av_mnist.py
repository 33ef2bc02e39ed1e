"""AV-MNIST built from MNIST digits and FSDD recordings (`av_mnist/sources`): each modality alone
and four fusions, 3 seeds, with robustness. Needs the source files (see
experiments/configs/av_mnist.py; `../shared/data` holds them on the project's machines):

    mmjax sweep --config experiments/sweeps/av_mnist.py --workdir runs/av_mnist \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config():
  return sweep_config(os.path.join(CONFIGS, "av_mnist.py"),
                      {"config_arg": ("image", "audio", "concat", "late", "tensor", "low_rank"),
                       "seed": (0, 1, 2)},
                      ("test/accuracy",), robustness=True, manual_dir=True)
