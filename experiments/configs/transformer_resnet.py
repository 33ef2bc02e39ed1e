"""The seed experiment with a Transformer text encoder and a small ResNet image encoder."""
import importlib.util
import os

import ml_collections


def _seed_config() -> ml_collections.ConfigDict:
  # Config files are loaded by path, not as a package, so the sibling is loaded the same way.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_text_image.py")
  spec = importlib.util.spec_from_file_location("seed_text_image", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config() -> ml_collections.ConfigDict:
  config = _seed_config()
  config.model.encoders.text = dict(name="transformer", vocab_size=25_000, max_length=16,
                                    model_dim=128, num_layers=2, num_heads=4, mlp_dim=256,
                                    dropout_rate=0.1)
  config.model.encoders.image = dict(name="resnet", stage_channels=(32, 64), blocks_per_stage=1)
  return config
