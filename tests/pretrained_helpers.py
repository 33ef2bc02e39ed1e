"""The tiny reference checkpoints under tests/data/pretrained (made by
experiments/pretrained/make_fixtures.py with torch and transformers) and towers built from them."""
import os

import numpy as np

from mmjax import pretrained

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "pretrained")

# Fixture directory -> the config.json model_type it holds (tests check every architecture has one).
CASES = {
    "clip_quick_gelu": "clip",
    "clip_gelu": "clip",
    "siglip": "siglip",
    "bert": "bert",
    "roberta": "roberta",
    "vit": "vit",
    "vit_no_qkv_bias": "vit",
    "ast": "audio-spectrogram-transformer",
}

# Each registered tower and the fixture it is built from.
TOWER_CASES = {
    "clip_vision": "clip_quick_gelu",
    "clip_text": "clip_quick_gelu",
    "siglip_vision": "siglip",
    "siglip_text": "siglip",
    "bert": "bert",
    "vit_pretrained": "vit",
    "ast": "ast",
}


def path(case: str) -> str:
  return os.path.join(FIXTURES, case)


def reference(case: str):
  return np.load(os.path.join(FIXTURES, case, "reference.npz"))


def tower(name: str, **fields):
  """Tower `name` with its fixture's architecture (and checkpoint), `fields` overriding."""
  constructor = pretrained.TOWERS[name]
  spec = pretrained.resolve_spec(constructor, {"checkpoint": path(TOWER_CASES[name]), **fields})
  return constructor(**spec)


def tower_inputs(name: str, batch: int, rng: np.random.Generator):
  """`(inputs, mask)` of `batch` examples that tower `name` reads: token ids with a padding mask
  for text, images or filter banks with a presence mask otherwise."""
  module = tower(name)
  if module.input_axes == ("B", "T"):
    length = 8
    ids = rng.integers(5, module.vocab_size, (batch, length)).astype(np.int32)
    return ids, np.arange(length)[None] < rng.integers(1, length + 1, (batch, 1))
  if name == "ast":
    return (rng.normal(size=(batch, module.max_length, module.num_mel_bins)).astype(np.float32),
            np.ones(batch, bool))
  return (rng.normal(size=(batch, module.image_size, module.image_size, 3)).astype(np.float32),
          np.ones(batch, bool))
