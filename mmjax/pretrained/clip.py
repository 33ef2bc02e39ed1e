"""CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision"), as transformers' `CLIPModel` computes it.

Vision: x = LN_pre([c; P(image)] + E_pos) (P: a p×p stride-p convolution without bias, c the class
embedding), h = Encoder(x) (pre-LN layers), pooler_output = LN_post(h[:, 0]),
image_embeds = W_v pooler_output (bias-free).
Text: x = E_tok[ids] + E_pos[:T], h = LN_final(Encoder(x, causal ∧ padding mask)),
pooler_output = h[b, first position of the EOS id] (the highest id when the config's EOS id is 2:
checkpoints from before transformers PR #24773), text_embeds = W_t pooler_output.
Pair: logits_per_text = exp(s) · t̂ îᵀ with t̂, î the L2-normalised embeddings; logits_per_image
its transpose. `last_hidden_state` of the vision tower is the encoder's output (no final LN), of
the text tower after `final_layer_norm`, as in the reference. The activation is `hidden_act`
(quick-GELU for OpenAI's checkpoints).

Name table (reference tensor -> flax parameter), `vision_model.` / `text_model.` prefixes:
    embeddings.patch_embedding.weight (D,C,p,p)   patch_embedding/kernel (p,p,C,D)
    embeddings.class_embedding (D,)               class_embedding (D,)
    embeddings.position_embedding.weight          position_embedding (N+1, D) (resampled if the
                                                  image size differs)
    pre_layrnorm.* [sic] / post_layernorm.*       pre_layernorm / post_layernorm
    embeddings.token_embedding.weight             token_embedding/embedding
    encoder.layers.{i}.self_attn.{q,k,v,out}_proj encoder/layer_{i}/attention/{query,key,value,out}
    encoder.layers.{i}.layer_norm{1,2}            encoder/layer_{i}/norm{1,2}
    encoder.layers.{i}.mlp.fc{1,2}                encoder/layer_{i}/mlp/fc{1,2}
    final_layer_norm.*                            final_layer_norm
    visual_projection.weight / text_projection.weight (P,D)   projection/kernel (D,P)
    logit_scale ()                                logit_scale ()
"""
from typing import Any, ClassVar, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.pretrained import loading
from mmjax.pretrained.blocks import Tower, patch_tokens, required
from mmjax.pretrained.files import Tensors
from mmjax.pretrained.loading import Source

Array = jax.Array
_init = nn.initializers.normal(0.02)


def encoder_layer_table(flax_prefix: str, reference: str) -> Dict[str, Source]:
  """One CLIP/SigLIP encoder layer (`encoder.layers.{i}`)."""
  table = {}
  for flax_name, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"),
                          ("out", "out_proj")):
    table.update(loading.dense(f"{flax_prefix}/attention/{flax_name}",
                               f"{reference}.self_attn.{name}"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm1", f"{reference}.layer_norm1"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm2", f"{reference}.layer_norm2"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc1", f"{reference}.mlp.fc1"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc2", f"{reference}.mlp.fc2"))
  return table


def tower_config(config: Mapping[str, Any], key: str, model_types) -> Mapping[str, Any]:
  """The tower's part of a pair's config.json (`vision_config`), or a tower's own config.json."""
  return config[key] if config.get("model_type") in model_types and key in config else config


def encoder_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
  """The `blocks.Encoder` fields every tower reads from its config.json."""
  return dict(hidden_size=config["hidden_size"], num_layers=config["num_hidden_layers"],
              num_heads=config["num_attention_heads"], mlp_dim=config["intermediate_size"],
              activation=config["hidden_act"], layer_norm_eps=config["layer_norm_eps"])


class CLIPVision(Tower):
  """CLIP's vision tower and projection: images `(B, H, W, C)` (normalised as its image processor
  does, `mmjax/data/processors.py`) -> `outputs` (module docstring); as an encoder, `features`:
  `image_embeds` (projected, not normalised) or `pooler_output`."""
  image_size: Optional[int] = None
  patch_size: Optional[int] = None
  num_channels: int = 3
  projection_dim: Optional[int] = None
  features: str = "image_embeds"

  input_axes: ClassVar = ("B", "H", "W", "C")
  MODEL_TYPES: ClassVar = ("clip", "clip_vision_model")
  PREFIXES: ClassVar = ("vision_model.", "")
  INPUT_SIDE: ClassVar = ("patch_embedding", "class_embedding", "position_embedding",
                          "pre_layernorm")

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    vision = tower_config(config, "vision_config", ("clip",))
    return dict(encoder_fields(vision), image_size=vision["image_size"],
                patch_size=vision["patch_size"], num_channels=vision.get("num_channels", 3),
                projection_dim=config.get("projection_dim", vision.get("projection_dim", 0)))

  @nn.compact
  def outputs(self, images: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    del mask
    required(self, "image_size", "patch_size")
    patches = patch_tokens(images, self.hidden_size, self.patch_size, self.patch_size, False,
                           self.dtype)
    batch, width = patches.shape[0], self.hidden_size
    cls = self.param("class_embedding", _init, (width,))
    grid = self.image_size // self.patch_size
    positions = self.param("position_embedding", _init, (grid * grid + 1, width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, width)), patches],
                        axis=1)
    x = self.norm("pre_layernorm")(x + positions.astype(self.dtype))
    last, hidden = self.encoder()(x, None, train)
    pooled = self.norm("post_layernorm")(last[:, 0])
    out = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}
    if self.projection_dim:
      out["image_embeds"] = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                                     name="projection")(pooled)
    return out

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.patch_embedding.weight", directory)
    table = {
        "patch_embedding/kernel": Source(f"{root}embeddings.patch_embedding.weight",
                                         loading.conv),
        "class_embedding": Source(f"{root}embeddings.class_embedding"),
        "position_embedding": Source(f"{root}embeddings.position_embedding.weight",
                                     loading.resample_positions(1)),
        "projection/kernel": Source("visual_projection.weight", loading.linear),
        **loading.layer_norm("pre_layernorm", f"{root}pre_layrnorm"),
        **loading.layer_norm("post_layernorm", f"{root}post_layernorm"),
    }
    table.update(loading.stacked_layers("encoder", f"{root}encoder.layers.{{i}}",
                                        self.num_layers, self.scan, encoder_layer_table))
    return table


def token_embeddings(tower: nn.Module, ids: Array) -> Array:
  """CLIP's and SigLIP's E_tok[ids] + E_pos[:T] (parameters `token_embedding`,
  `position_embedding`), inside `tower`'s compact `outputs`."""
  x = nn.Embed(tower.vocab_size, tower.hidden_size, embedding_init=_init, dtype=tower.dtype,
               name="token_embedding")(ids)
  positions = tower.param("position_embedding", _init, (tower.max_positions, tower.hidden_size))
  return x + positions[:ids.shape[1]].astype(tower.dtype)


def token_embedding_table(root: str) -> Dict[str, Source]:
  """The name table of `token_embeddings` (`embeddings.` under the text tower's prefix)."""
  return {"token_embedding/embedding": Source(f"{root}embeddings.token_embedding.weight"),
          "position_embedding": Source(f"{root}embeddings.position_embedding.weight")}


def causal_padding_mask(mask: Optional[Array], length: int, causal: bool) -> Optional[Array]:
  """`(B, 1, T, T)` bool: query t may attend key s when s is real (`mask`) and, if `causal`,
  s ≤ t; None when nothing is masked."""
  allowed = jnp.tril(jnp.ones((length, length), bool))[None, None] if causal else None
  if mask is not None:
    keys = mask.astype(bool)[:, None, None, :]
    allowed = keys if allowed is None else allowed & keys
  return allowed


class CLIPText(Tower):
  """CLIP's text tower and projection: token ids `(B, T)` and their mask (from the tower's
  tokenizer) -> `outputs` (module docstring); as an encoder, `features`: `text_embeds` or
  `pooler_output`."""
  vocab_size: Optional[int] = None
  max_positions: Optional[int] = None
  eos_token_id: Optional[int] = None
  projection_dim: Optional[int] = None
  features: str = "text_embeds"

  input_axes: ClassVar = ("B", "T")
  MODEL_TYPES: ClassVar = ("clip", "clip_text_model")
  PREFIXES: ClassVar = ("text_model.", "")
  INPUT_SIDE: ClassVar = ("token_embedding", "position_embedding")

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    text = tower_config(config, "text_config", ("clip",))
    return dict(encoder_fields(text), vocab_size=text["vocab_size"],
                max_positions=text["max_position_embeddings"], eos_token_id=text["eos_token_id"],
                projection_dim=config.get("projection_dim", text.get("projection_dim", 0)))

  @nn.compact
  def outputs(self, ids: Array, mask: Optional[Array] = None, *,
              train: bool = False) -> Dict[str, Any]:
    required(self, "vocab_size", "max_positions", "eos_token_id")
    length = ids.shape[1]
    x = token_embeddings(self, ids)
    encoded, hidden = self.encoder()(x, causal_padding_mask(mask, length, True), train)
    last = self.norm("final_layer_norm")(encoded)
    if self.eos_token_id == 2:
      eos = jnp.argmax(ids, axis=-1)
    else:
      eos = jnp.argmax((ids == self.eos_token_id).astype(jnp.int32), axis=-1)
    pooled = last[jnp.arange(ids.shape[0]), eos]
    out = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}
    if self.projection_dim:
      out["text_embeds"] = nn.Dense(self.projection_dim, use_bias=False, dtype=self.dtype,
                                    name="projection")(pooled)
    return out

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.token_embedding.weight", directory)
    table = {
        **token_embedding_table(root),
        "projection/kernel": Source("text_projection.weight", loading.linear),
        **loading.layer_norm("final_layer_norm", f"{root}final_layer_norm"),
    }
    table.update(loading.stacked_layers("encoder", f"{root}encoder.layers.{{i}}",
                                        self.num_layers, self.scan, encoder_layer_table))
    return table


def normalise(x: Array) -> Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class ImageTextPair(nn.Module):
  """Two towers and their logit scale (and SigLIP's bias): `outputs(pixel_values, input_ids,
  attention_mask)` with the names of transformers' `CLIPOutput` / `SiglipOutput`
  (`logits_per_image`, `logits_per_text`, the normalised `image_embeds` and `text_embeds`, and
  `vision_model_output`, `text_model_output`): logits_per_text = exp(s) · t̂ îᵀ (+ b).
  `image_key` / `text_key` name the tower outputs that are the embeddings."""
  vision: nn.Module
  text: nn.Module
  image_key: str = "image_embeds"
  text_key: str = "text_embeds"
  logit_bias: bool = False

  @nn.compact
  def outputs(self, pixel_values: Array, input_ids: Array,
              attention_mask: Optional[Array] = None) -> Dict[str, Any]:
    vision = self.vision.outputs(pixel_values)
    text = self.text.outputs(input_ids, attention_mask)
    image_embeds = normalise(vision[self.image_key].astype(jnp.float32))
    text_embeds = normalise(text[self.text_key].astype(jnp.float32))
    scale = jnp.exp(self.param("logit_scale", nn.initializers.constant(2.6592), ()))
    logits_per_text = scale * text_embeds @ image_embeds.T
    if self.logit_bias:
      logits_per_text = logits_per_text + self.param("logit_bias", nn.initializers.zeros, ())
    return {"logits_per_image": logits_per_text.T, "logits_per_text": logits_per_text,
            "image_embeds": image_embeds, "text_embeds": text_embeds,
            "vision_model_output": vision, "text_model_output": text}

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    """The towers' tables under `vision/`, `text/`, and `logit_scale` (`()` in CLIP's files,
    `(1,)` in SigLIP's), `logit_bias`."""
    table = {**{f"vision/{k}": v for k, v in self.vision.pretrained_table(tensors,
                                                                           directory).items()},
             **{f"text/{k}": v for k, v in self.text.pretrained_table(tensors, directory).items()},
             "logit_scale": Source("logit_scale", loading.reshaped)}
    if self.logit_bias:
      table["logit_bias"] = Source("logit_bias", loading.reshaped)
    return table
