"""ViT (Dosovitskiy et al., 2021) as transformers' `ViTModel` computes it, and AST (Gong et al.,
2021, "AST: Audio Spectrogram Transformer") as `ASTModel` does: the same pre-LN encoder over
patch tokens, AST's patches overlapping on a (frequency, time) filter-bank image.

ViT: x = [c; P(image)] + E_pos (P: p×p stride-p convolution with bias), h = LN(Encoder(x)),
last_hidden_state = h, pooler_output = tanh(W_p h[:, 0] + b_p) (ViTModel's pooler).
AST: x = [c; d; P(fbank)] + E_pos with P a p×p convolution of strides (f_s, t_s) over the
`(B, T, F)` filter banks read as a one-channel `(F, T)` image, h = LN(Encoder(x)),
pooler_output = (h[:, 0] + h[:, 1]) / 2 (class and distillation tokens, DeiT's).
The grid is ((F − p) // f_s + 1) × ((T − p) // t_s + 1).

Why AST rather than Whisper's encoder as the audio tower: it is the tower the multimodal
literature fine-tunes for classification (AST on AudioSet/ESC-50; MBT's and the audio-visual
baselines' audio backbones are ViT/AST), it is a ViT, so it shares this file's encoder and
name table, and it starts from image weights by position resampling (`ast_from_vit`).

Name table (prefix `vit.` / `audio_spectrogram_transformer.` optional):
    embeddings.cls_token (1,1,D) [, embeddings.distillation_token]   cls_token [, distillation_token]
    embeddings.position_embeddings (1, N+k, D)    position_embedding (resampled if needed)
    embeddings.patch_embeddings.projection.*      patch_embedding/{kernel,bias}
    encoder.layer.{i}.attention.attention.{query,key,value}.*   encoder/layer_{i}/attention/…
    encoder.layer.{i}.attention.output.dense.*    encoder/layer_{i}/attention/out
    encoder.layer.{i}.layernorm_before / _after   encoder/layer_{i}/norm1 / norm2
    encoder.layer.{i}.intermediate.dense / output.dense   encoder/layer_{i}/mlp/fc1 / fc2
    layernorm.*                                   final_norm
    pooler.dense.*                                pooler (ViT)
"""
from typing import Any, ClassVar, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.pretrained import loading
from mmjax.pretrained.blocks import Tower, patch_tokens, required
from mmjax.pretrained.clip import encoder_fields
from mmjax.pretrained.files import Tensors, read_config
from mmjax.pretrained.loading import Source

Array = jax.Array
_init = nn.initializers.normal(0.02)


def vit_layer_table(flax_prefix: str, reference: str, qkv_bias: bool = True) -> Dict[str, Source]:
  """One ViT/AST layer, `encoder.layer.{i}`."""
  table = {}
  for name in ("query", "key", "value"):
    table.update(loading.dense(f"{flax_prefix}/attention/{name}",
                               f"{reference}.attention.attention.{name}", bias=qkv_bias))
  table.update(loading.dense(f"{flax_prefix}/attention/out", f"{reference}.attention.output.dense"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm1", f"{reference}.layernorm_before"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm2", f"{reference}.layernorm_after"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc1", f"{reference}.intermediate.dense"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc2", f"{reference}.output.dense"))
  return table


def _tokens(module: nn.Module, patches: Array, names, grid_size: int) -> Array:
  """`[tokens named `names`; patches] + E_pos`, the learned `(1, 1, D)` tokens first."""
  batch, width = patches.shape[0], patches.shape[-1]
  prefix = [jnp.broadcast_to(module.param(name, _init, (1, 1, width)).astype(module.dtype),
                             (batch, 1, width)) for name in names]
  positions = module.param("position_embedding", _init, (1, len(names) + grid_size, width))
  return jnp.concatenate(prefix + [patches], axis=1) + positions.astype(module.dtype)


class ViTImage(Tower):
  """ViT: images `(B, H, W, C)` -> `outputs`; as an encoder, `features`: `cls` (the default:
  the normalised class token, what ViTForImageClassification reads), `mean` (the patch tokens'
  mean, big_vision's `gap`) or `pooler_output` (ViTModel's tanh pooler)."""
  image_size: Optional[int] = None
  patch_size: Optional[int] = None
  num_channels: int = 3
  qkv_bias: Optional[bool] = None
  use_pooler: bool = True
  features: str = "cls"

  input_axes: ClassVar = ("B", "H", "W", "C")
  MODEL_TYPES: ClassVar = ("vit",)
  PREFIXES: ClassVar = ("", "vit.")
  INPUT_SIDE: ClassVar = ("cls_token", "position_embedding", "patch_embedding")

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    return dict(encoder_fields(config), image_size=config["image_size"],
                patch_size=config["patch_size"], num_channels=config.get("num_channels", 3),
                qkv_bias=config.get("qkv_bias", True),
                dropout_rate=config.get("hidden_dropout_prob", 0.0),
                attention_dropout_rate=config.get("attention_probs_dropout_prob", 0.0))

  @nn.compact
  def outputs(self, images: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    del mask
    required(self, "image_size", "patch_size", "qkv_bias")
    patches = patch_tokens(images, self.hidden_size, self.patch_size, self.patch_size, True,
                           self.dtype)
    x = _tokens(self, patches, ("cls_token",), (self.image_size // self.patch_size) ** 2)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    encoded, hidden = self.encoder(qkv_bias=self.qkv_bias)(x, None, train)
    last = self.norm("final_norm")(encoded)
    out = {"last_hidden_state": last, "hidden_states": hidden}
    if self.use_pooler:
      out["pooler_output"] = self.tanh_pooler(last)
    return out

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.cls_token", directory)
    table = {
        "cls_token": Source(f"{root}embeddings.cls_token"),
        "position_embedding": Source(f"{root}embeddings.position_embeddings",
                                     loading.resample_positions(1)),
        "patch_embedding/kernel": Source(f"{root}embeddings.patch_embeddings.projection.weight",
                                         loading.conv),
        "patch_embedding/bias": Source(f"{root}embeddings.patch_embeddings.projection.bias"),
        **loading.layer_norm("final_norm", f"{root}layernorm"),
    }
    table.update(loading.optional_dense("pooler", f"{root}pooler.dense", tensors, self.use_pooler))
    table.update(loading.stacked_layers(
        "encoder", f"{root}encoder.layer.{{i}}", self.num_layers, self.scan,
        lambda flax_prefix, reference: vit_layer_table(flax_prefix, reference, self.qkv_bias)))
    return table


def _sum_channels(array, target):
  """An image patch kernel `(D, C, p, p)` as a one-channel one (AST's ImageNet start: the sum
  over the colour channels), then as flax's conv kernel."""
  return loading.conv(array.sum(axis=1, keepdims=True), target)


class ASTAudio(Tower):
  """AST: filter banks `(B, T, F)` (frames × mel bins, from `mmjax/data/processors.py`'s AST
  features) -> `outputs`; as an encoder, `features` `pooler_output` by default. A ViT checkpoint
  (model_type `vit`) starts it from image weights: kernels summed over colours, the class token
  and its position copied to the distillation token's, the g×g position grid resized bilinearly
  to the spectrogram's (AST's own code crops an axis that shrinks and interpolates one that
  grows; a bilinear resize of both is big_vision's `resample_posemb`, the choice here); the encoder
  fields then come from the ViT and the spectrogram fields must be set."""
  num_mel_bins: Optional[int] = None
  max_length: Optional[int] = None
  patch_size: Optional[int] = None
  frequency_stride: Optional[int] = None
  time_stride: Optional[int] = None
  qkv_bias: Optional[bool] = None
  features: str = "pooler_output"

  input_axes: ClassVar = ("B", "T", "F")
  MODEL_TYPES: ClassVar = ("audio-spectrogram-transformer", "vit")
  PREFIXES: ClassVar = ("", "audio_spectrogram_transformer.", "vit.")
  INPUT_SIDE: ClassVar = ("cls_token", "distillation_token", "position_embedding",
                          "patch_embedding")
  PREFIX_TOKENS: ClassVar[int] = 2

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    fields = dict(encoder_fields(config), qkv_bias=config.get("qkv_bias", True),
                  dropout_rate=config.get("hidden_dropout_prob", 0.0),
                  attention_dropout_rate=config.get("attention_probs_dropout_prob", 0.0))
    if config["model_type"] == "vit":
      return dict(fields, patch_size=config["patch_size"])
    return dict(fields, num_mel_bins=config["num_mel_bins"], max_length=config["max_length"],
                patch_size=config["patch_size"], frequency_stride=config["frequency_stride"],
                time_stride=config["time_stride"])

  def grid(self):
    return ((self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
            (self.max_length - self.patch_size) // self.time_stride + 1)

  @nn.compact
  def outputs(self, features: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    del mask
    required(self, "num_mel_bins", "max_length", "patch_size", "frequency_stride",
             "time_stride", "qkv_bias")
    image = jnp.swapaxes(features, 1, 2)[..., None]                    # (B, F, T, 1)
    patches = patch_tokens(image, self.hidden_size, self.patch_size,
                           (self.frequency_stride, self.time_stride), True, self.dtype)
    frequencies, times = self.grid()
    x = _tokens(self, patches, ("cls_token", "distillation_token"), frequencies * times)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    encoded, hidden = self.encoder(qkv_bias=self.qkv_bias)(x, None, train)
    last = self.norm("final_norm")(encoded)
    return {"last_hidden_state": last, "pooler_output": (last[:, 0] + last[:, 1]) / 2,
            "hidden_states": hidden}

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.cls_token", directory)
    saved = read_config(directory)
    from_image = saved["model_type"] == "vit"
    saved_grid = None if from_image else self.clone(**self.config_fields(saved)).grid()
    embeddings = f"{root}embeddings."
    table = {
        "cls_token": Source(f"{embeddings}cls_token"),
        "distillation_token": Source(f"{embeddings}{'cls' if from_image else 'distillation'}"
                                     "_token"),
        "position_embedding": Source(f"{embeddings}position_embeddings",
                                     loading.resample_positions(1, None, self.grid(), 2)
                                     if from_image else
                                     loading.resample_positions(2, saved_grid, self.grid())),
        "patch_embedding/kernel": Source(f"{embeddings}patch_embeddings.projection.weight",
                                         _sum_channels if from_image else loading.conv),
        "patch_embedding/bias": Source(f"{embeddings}patch_embeddings.projection.bias"),
        **loading.layer_norm("final_norm", f"{root}layernorm"),
    }
    table.update(loading.optional_dense("pooler", f"{root}pooler.dense", tensors, False))
    table.update(loading.stacked_layers(
        "encoder", f"{root}encoder.layer.{{i}}", self.num_layers, self.scan,
        lambda flax_prefix, reference: vit_layer_table(flax_prefix, reference, self.qkv_bias)))
    return table
