"""SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training"), as transformers'
`SiglipModel` computes it. The fixed-resolution SigLIP 2 checkpoints (`google/siglip2-*-patch16-
224`, model_type `siglip`) are the same architecture and load as they are; SigLIP 2's NaFlex
variant (`siglip2`: variable resolution, linear patch embedding) is not supported.

Vision: x = P(image) + E_pos (P a p×p stride-p convolution with bias; no class token),
h = LN_post(Encoder(x)) (pre-LN layers, tanh-GELU), pooler_output = MAP(h): a learned probe q
attends to h (torch MultiheadAttention, packed q/k/v projections), y = a + MLP(LN(a)),
pooler_output = y[:, 0] (Lee et al. 2019's multihead attention pooling).
Text: x = E_tok[ids] + E_pos[:T], h = LN_final(Encoder(x)) (bidirectional), pooler_output =
W_h h[:, -1] + b_h (the last position: SigLIP pads to the maximum length and attends to the
padding, as it was trained; `attend_to_padding=False` masks it instead).
Pair: logits_per_text = exp(s) · t̂ îᵀ + b, logits_per_image its transpose.

Name table, `vision_model.` / `text_model.` prefixes (CLIP's for the shared parts, see clip.py):
    embeddings.patch_embedding.{weight,bias}      patch_embedding/{kernel,bias}
    embeddings.position_embedding.weight (N, D)   position_embedding (resampled if needed)
    post_layernorm.*                              post_layernorm
    head.probe (1,1,D)                            head/probe
    head.attention.in_proj_{weight,bias} (3D,…)   head/attention/{query,key,value} (row blocks)
    head.attention.out_proj.*                     head/attention/out
    head.layernorm.*, head.mlp.fc{1,2}.*          head/norm, head/mlp/fc{1,2}
    text: head.{weight,bias}                      head/{kernel,bias}
    logit_scale (1,), logit_bias (1,)             logit_scale, logit_bias
"""
from typing import Any, ClassVar, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.pretrained import loading
from mmjax.pretrained.blocks import MLP, Attention, Tower, patch_tokens, required
from mmjax.pretrained.clip import (causal_padding_mask, encoder_fields, encoder_layer_table,
                                   token_embedding_table, token_embeddings, tower_config)
from mmjax.pretrained.files import Tensors
from mmjax.pretrained.loading import Source

Array = jax.Array
_init = nn.initializers.normal(0.02)


class AttentionPoolingHead(nn.Module):
  """SigLIP's MAP head: `(B, N, D)` -> `(B, D)` (module docstring)."""
  num_heads: int
  mlp_dim: int
  activation: str
  layer_norm_eps: float
  attention: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, tokens.shape[-1]))
    queries = jnp.broadcast_to(probe.astype(self.dtype), (tokens.shape[0],) + probe.shape[1:])
    attended = Attention(self.num_heads, True, 0.0, self.attention, self.dtype,
                         name="attention")(queries, tokens, None)
    normed = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="norm")(attended)
    return (attended + MLP(self.mlp_dim, self.activation, self.dtype, name="mlp")(normed))[:, 0]


class SiglipVision(Tower):
  """SigLIP's vision tower: images `(B, H, W, C)` -> `outputs`; as an encoder, `features`
  `pooler_output` (the MAP head's output, SigLIP's image embedding) by default."""
  image_size: Optional[int] = None
  patch_size: Optional[int] = None
  num_channels: int = 3
  use_head: bool = True
  features: str = "pooler_output"

  input_axes: ClassVar = ("B", "H", "W", "C")
  MODEL_TYPES: ClassVar = ("siglip", "siglip_vision_model")
  PREFIXES: ClassVar = ("vision_model.", "")
  INPUT_SIDE: ClassVar = ("patch_embedding", "position_embedding")
  PREFIX_TOKENS: ClassVar[int] = 0

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    vision = tower_config(config, "vision_config", ("siglip",))
    return dict(encoder_fields(vision), image_size=vision["image_size"],
                patch_size=vision["patch_size"], num_channels=vision.get("num_channels", 3),
                use_head=vision.get("vision_use_head", True))

  @nn.compact
  def outputs(self, images: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    del mask
    required(self, "image_size", "patch_size")
    x = patch_tokens(images, self.hidden_size, self.patch_size, self.patch_size, True,
                     self.dtype)
    grid = self.image_size // self.patch_size
    positions = self.param("position_embedding", _init, (grid * grid, self.hidden_size))
    encoded, hidden = self.encoder()(x + positions.astype(self.dtype), None, train)
    last = self.norm("post_layernorm")(encoded)
    out = {"last_hidden_state": last, "hidden_states": hidden}
    if self.use_head:
      out["pooler_output"] = AttentionPoolingHead(
          self.num_heads, self.mlp_dim, self.activation, self.layer_norm_eps, self.attention,
          self.dtype, name="head")(last)
    return out

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.patch_embedding.weight", directory)
    table = {
        "patch_embedding/kernel": Source(f"{root}embeddings.patch_embedding.weight",
                                         loading.conv),
        "patch_embedding/bias": Source(f"{root}embeddings.patch_embedding.bias"),
        "position_embedding": Source(f"{root}embeddings.position_embedding.weight",
                                     loading.resample_positions(0)),
        **loading.layer_norm("post_layernorm", f"{root}post_layernorm"),
        "head/probe": Source(f"{root}head.probe"),
        **loading.dense("head/attention/out", f"{root}head.attention.out_proj"),
        **loading.layer_norm("head/norm", f"{root}head.layernorm"),
        **loading.dense("head/mlp/fc1", f"{root}head.mlp.fc1"),
        **loading.dense("head/mlp/fc2", f"{root}head.mlp.fc2"),
    }
    for index, name in enumerate(("query", "key", "value")):
      table[f"head/attention/{name}/kernel"] = Source(
          f"{root}head.attention.in_proj_weight", loading.row_block(index, 3, loading.linear))
      table[f"head/attention/{name}/bias"] = Source(f"{root}head.attention.in_proj_bias",
                                                    loading.row_block(index, 3))
    table.update(loading.stacked_layers("encoder", f"{root}encoder.layers.{{i}}",
                                        self.num_layers, self.scan, encoder_layer_table))
    return table


class SiglipText(Tower):
  """SigLIP's text tower: token ids `(B, T)` (padded to the maximum length by its tokenizer) ->
  `outputs`; as an encoder, `features` `pooler_output` (the head's output)."""
  vocab_size: Optional[int] = None
  max_positions: Optional[int] = None
  projection_dim: Optional[int] = None
  attend_to_padding: bool = True
  features: str = "pooler_output"

  input_axes: ClassVar = ("B", "T")
  MODEL_TYPES: ClassVar = ("siglip", "siglip_text_model")
  PREFIXES: ClassVar = ("text_model.", "")
  INPUT_SIDE: ClassVar = ("token_embedding", "position_embedding")

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    text = tower_config(config, "text_config", ("siglip",))
    return dict(encoder_fields(text), vocab_size=text["vocab_size"],
                max_positions=text["max_position_embeddings"],
                projection_dim=text.get("projection_size") or text["hidden_size"])

  @nn.compact
  def outputs(self, ids: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    required(self, "vocab_size", "max_positions", "projection_dim")
    length = ids.shape[1]
    x = token_embeddings(self, ids)
    attention_mask = None if self.attend_to_padding else causal_padding_mask(mask, length, False)
    encoded, hidden = self.encoder()(x, attention_mask, train)
    last = self.norm("final_layer_norm")(encoded)
    pooled = nn.Dense(self.projection_dim, dtype=self.dtype, name="head")(last[:, -1])
    return {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.token_embedding.weight", directory)
    table = {
        **token_embedding_table(root),
        **loading.layer_norm("final_layer_norm", f"{root}final_layer_norm"),
        **loading.dense("head", f"{root}head"),
    }
    table.update(loading.stacked_layers("encoder", f"{root}encoder.layers.{{i}}",
                                        self.num_layers, self.scan, encoder_layer_table))
    return table
