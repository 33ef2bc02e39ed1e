"""The seed document's text+image classifier on the built-in `mm_shapes` dataset.

text: embedding (25,000 x 100) -> 2-layer LSTM (256) -> hidden state at the last real token
image: 3x3 conv (C channels) -> ReLU -> global average pool
fusion: concatenate -> Dense to the classes; softmax cross-entropy; Adam.

Every field of every module is in the config and can be overridden, e.g.
`--config.model.encoders.image.channels=128`; other encoders: `experiments/configs/transformer_resnet.py`.
Another fusion, with its defaults: `--config=experiments/configs/seed_text_image.py:low_rank`.
"""
import ml_collections

from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config


def get_config(fusion: str = "concat") -> ml_collections.ConfigDict:
  config = trainer_config("mm_shapes")
  config.model.encoders = ml_collections.ConfigDict()
  config.model.encoders.text = encoder_config("lstm", vocab_size=25_000, embed_dim=100,
                                              hidden_dim=256, num_layers=2)
  config.model.encoders.image = encoder_config("conv_pool", channels=64)
  config.model.fusion = fusion_config(fusion)
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.label = head_config("linear", num_classes=9)
  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = task_config("classification")
  config.optimizer.learning_rate = 2e-3
  return config
