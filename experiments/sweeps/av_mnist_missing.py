"""Missing modalities and modality imbalance on AV-MNIST built from MNIST digits and FSDD
recordings (`av_mnist/sources`): four fusions trained plainly, with modality dropout and with
OGM-GE, 3 seeds; each cell reports its test accuracy with only each subset of the modalities
present, the encoders' gradient shares and a linear probe on each encoder's features. The
single-modality models it is compared with are the `av_mnist` sweep's (`image` and `audio`, the
same configs and seeds). Needs the source files (see experiments/configs/av_mnist.py;
`../shared/data` holds them on the project's machines):

    mmjax sweep --config experiments/sweeps/av_mnist_missing.py --workdir runs/av_mnist_missing \\
        --config.fixed.dataset.manual_dir=DIR [--config.fixed.dataset.data_dir=DIR]
"""
import os

from mmjax.sweep import sweep_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
FUSIONS = ("concat", "late", "tensor", "low_rank")


def get_config():
  variants = (*FUSIONS, *(f"{fusion},{training}"
                                           for training in ("dropout", "ogm_ge")
                                           for fusion in FUSIONS))
  return sweep_config(os.path.join(CONFIGS, "av_mnist.py"),
                      {"config_arg": variants, "seed": (0, 1, 2)},
                      ("test/accuracy",), subsets=True, manual_dir=True)
