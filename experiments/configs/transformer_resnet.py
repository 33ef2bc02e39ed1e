"""The seed experiment with a Transformer text encoder and a small ResNet image encoder."""
import os

import ml_collections

from mmjax.model import encoder_config
from mmjax.train.defaults import load_config


def get_config() -> ml_collections.ConfigDict:
  # Config files are loaded by path, not as a package, so the sibling is loaded the same way.
  config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "seed_text_image.py"))
  config.model.encoders.text = encoder_config("transformer", vocab_size=25_000, max_length=16,
                                              model_dim=128, num_layers=2, num_heads=4,
                                              mlp_dim=256, dropout_rate=0.1)
  config.model.encoders.image = encoder_config("resnet", stage_channels=(32, 64),
                                               blocks_per_stage=1)
  return config
