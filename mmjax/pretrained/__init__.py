"""Pretrained towers from local checkpoints in the Hugging Face layout, computing what the
reference implementations (transformers' PyTorch models) compute: one file per architecture
family, each with its equations and its name table (reference tensor -> flax parameter).

    pretrained = mmjax.pretrained.load("path/to/clip-vit-base-patch32")
    out = pretrained(pixel_values_nhwc, input_ids, attention_mask)   # CLIP: logits_per_image, ...

`TOWERS` are mmjax encoders (`mmjax/encoders/__init__.py` registers them):
`encoder_config("clip_vision", checkpoint=DIR)` fills the architecture fields from DIR's
config.json (each still overridable), and training starts from DIR's tensors
(`load_into_params`, called by the trainer on a fresh run).
"""
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.pretrained.bert import BertText
from mmjax.pretrained.clip import CLIPText, CLIPVision, ImageTextPair
from mmjax.pretrained.files import Tensors, read_config
from mmjax.pretrained.loading import load_params
from mmjax.pretrained.siglip import SiglipText, SiglipVision
from mmjax.pretrained.vit import ASTAudio, ViTImage

# Encoder names -> tower modules.
TOWERS = {
    "clip_vision": CLIPVision,
    "clip_text": CLIPText,
    "siglip_vision": SiglipVision,
    "siglip_text": SiglipText,
    "bert": BertText,
    "vit_pretrained": ViTImage,
    "ast": ASTAudio,
}

# config.json `model_type` of a pair -> (vision tower, text tower, ImageTextPair fields, text tower
# fields): SigLIP's embeddings are the towers' pooled outputs, its logits have a bias, and `load`
# applies the attention mask it is given to the text, as the reference does.
PAIRS = {
    "clip": (CLIPVision, CLIPText, {}, {}),
    "siglip": (SiglipVision, SiglipText, dict(image_key="pooler_output", text_key="pooler_output",
                                              logit_bias=True), dict(attend_to_padding=False)),
}

# config.json `model_type` -> the tower `load` builds (besides the pairs).
ARCHITECTURES = {
    "clip_vision_model": CLIPVision,
    "clip_text_model": CLIPText,
    "siglip_vision_model": SiglipVision,
    "siglip_text_model": SiglipText,
    "bert": BertText,
    "roberta": BertText,
    "vit": ViTImage,
    "audio-spectrogram-transformer": ASTAudio,
}
MODEL_TYPES = sorted({*PAIRS, *ARCHITECTURES})


def _model_type(directory: str, config: Mapping[str, Any], supported) -> str:
  model_type = config.get("model_type")
  if model_type not in supported:
    raise ConfigError(f"pretrained checkpoint {directory!r} is a {model_type!r} model, which "
                      f"this loader does not support; supported model types: "
                      f"{', '.join(sorted(supported))}")
  return model_type


def tower_fields(constructor: Callable[..., Any], directory: str) -> Dict[str, Any]:
  """The architecture fields of tower `constructor` from `directory`'s config.json."""
  config = read_config(directory)
  _model_type(directory, config, constructor.MODEL_TYPES)
  return constructor.config_fields(config)


def resolve_spec(constructor: Callable[..., Any], spec: Mapping[str, Any]) -> Dict[str, Any]:
  """`spec` with the fields it leaves None taken from its `checkpoint`'s config.json (a tower
  with a checkpoint); any other spec as it is."""
  spec = dict(spec)
  if spec.get("checkpoint") and hasattr(constructor, "config_fields"):
    for name, value in tower_fields(constructor, spec["checkpoint"]).items():
      if spec.get(name) is None:
        spec[name] = value
  return spec


def example_inputs(module: nn.Module):
  """Inputs of batch 1 that `module.outputs` takes (for `jax.eval_shape` of its parameters)."""
  if isinstance(module, ImageTextPair):
    return example_inputs(module.vision)[:1] + example_inputs(module.text)
  if module.input_axes == ("B", "T"):
    return (jnp.zeros((1, module.max_positions), jnp.int32), jnp.ones((1, module.max_positions),
                                                                      bool))
  if isinstance(module, ASTAudio):
    return (jnp.zeros((1, module.max_length, module.num_mel_bins)),)
  return (jnp.zeros((1, module.image_size, module.image_size, module.num_channels)),)


class Pretrained(NamedTuple):
  """A loaded checkpoint: the module, its parameters and its config.json. Calling it runs
  `module.outputs` (the reference's output names); images are NHWC (transformers' NCHW
  `pixel_values.transpose(0, 2, 3, 1)`)."""
  module: nn.Module
  params: Any
  config: Dict[str, Any]

  def __call__(self, *args, **kwargs) -> Dict[str, Any]:
    return self.module.apply({"params": self.params}, *args, method="outputs", **kwargs)


def build(directory: str, dtype: Any = jnp.float32, config: Optional[Mapping[str, Any]] = None,
          **overrides: Any) -> nn.Module:
  """The module of `directory`'s architecture, its fields from config.json (`config` when read
  already) and `overrides` (a pair's as `vision={...}`, `text={...}`)."""
  config = config or read_config(directory)
  model_type = _model_type(directory, config, MODEL_TYPES)
  if model_type in PAIRS:
    vision, text, pair_fields, text_fields = PAIRS[model_type]
    return ImageTextPair(
        vision=vision(checkpoint=directory, dtype=dtype,
                      **{**vision.config_fields(config), **overrides.get("vision", {})}),
        text=text(checkpoint=directory, dtype=dtype, **text_fields,
                  **{**text.config_fields(config), **overrides.get("text", {})}),
        **pair_fields)
  constructor = ARCHITECTURES[model_type]
  return constructor(checkpoint=directory, dtype=dtype,
                     **{**constructor.config_fields(config), **overrides})


def load(directory: str, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
         **overrides: Any) -> Pretrained:
  """Builds `directory`'s architecture (`build`) and reads its tensors into parameters of
  `param_dtype`, one tensor at a time from the safetensors file(s). SigLIP's text
  tower applies the attention mask it is given, as the reference does (pass None for the
  usual SigLIP use, which attends to the padding)."""
  config = read_config(directory)
  module = build(directory, dtype, config, **overrides)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs(module),
                                                method="outputs"))["params"]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, param_dtype), abstract)
  tensors = Tensors(directory)
  params = load_params(module.pretrained_table(tensors, directory), abstract, directory, tensors)
  return Pretrained(module, params, config)


def checkpointed(model: nn.Module) -> Dict[str, nn.Module]:
  """`{parameter collection: module}` of a `MultimodalModel`'s encoders and heads that start
  from a pretrained checkpoint (a `checkpoint` field that is set)."""
  modules = {**{f"encoders_{m}": e for m, e in model.encoders.items()},
             **{f"heads_{t}": h for t, h in model.heads.items()}}
  return {collection: module for collection, module in modules.items()
          if getattr(module, "checkpoint", None) and hasattr(module, "pretrained_table")}


def load_into_params(modules: Mapping[str, nn.Module], params: Mapping[str, Any],
                     read: bool = True, log: Optional[Callable[[str], None]] = print
                     ) -> Dict[str, Any]:
  """`params` (a model's top-level collections on their devices) with the collection of each
  module in `modules` (`checkpointed`) replaced by its checkpoint's tensors, in the same dtypes
  and shardings. With `read=False` (abstract `params`: the trainer's check before compiling),
  only the name tables, tensor names and shapes are checked."""
  params = dict(params)
  for collection, module in modules.items():
    tensors = Tensors(module.checkpoint)
    loaded = load_params(module.pretrained_table(tensors, module.checkpoint), params[collection],
                         module.checkpoint, tensors, read)
    if read:
      params[collection] = {**params[collection], **loaded}
      if log:
        log(f"mmjax: {collection} starts from {module.checkpoint}")
  return params
