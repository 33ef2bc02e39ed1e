"""Multimodal Transformer (MulT): Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov, 2019,
"Multimodal Transformer for Unaligned Multimodal Language Sequences" (ACL); reference code
yaohungt/Multimodal-Transformer (`src/models.py`, `modules/transformer.py`).

Inputs are token sequences `features[m]: (B, T_m, D_m)` of possibly different lengths (unaligned),
with `masks[m]: (B, T_m)` True for real tokens (right padding); a `(B, D_m)` vector is a length-1
sequence (and its mask, which then belongs to the encoder's input, is ignored). Modalities in
sorted key order. With d = `model_dim`:
  1. X_m = Conv1D_{k=1}(z_m) = z_m W_m                        (B, T_m, d), no bias
  2. every stack S of L layers (a TransformerEncoder in the reference code) first embeds its
     inputs, E(u) = √d_S · u + PE (sinusoidal), with dropout `embed_dropout`, and ends with a
     LayerNorm. For every target α and source β ≠ α, the cross-modal stack (d_S = d):
        Y^[0] = E(X_α),   K = E(X_β)
        Y^[l] = Y^[l-1] + MHA(Q = LN_l(Y^[l-1]), K = V = LN_l(K)),   keys masked by masks[β]
        Y^[l] = Y^[l] + FFN(LN'_l(Y^[l])),   FFN(u) = W_2 ReLU(W_1 u),  W_1: d -> 4d
        Y_{β→α} = LN(Y^[L])
     one LayerNorm LN_l normalises both the queries and the keys, as in the reference code;
  3. Z_α = [Y_{β_1→α}; Y_{β_2→α}; ...]  (B, T_α, (M−1)·d), then the self-attention stack over
     Z_α (d_S = (M−1)·d, `self_layers` layers: max(L, 3) by default, as in the reference code);
  4. readout at α's last real token (the paper's "last elements"; `pooling="mean"` averages
     α's real tokens instead);
  5. h = [z_{α_1}; z_{α_2}; ...]  (B, M·(M−1)·d), then the reference code's residual projection
     h + W_4 dropout(ReLU(W_3 h)) (`residual_projection`).
Dropout: `attention_dropout` on the attention weights, `dropout_rate` on both residual branches
and after the FFN's ReLU (the reference's res/relu dropout), `embed_dropout` in E, `out_dropout`
in step 5. Defaults are the reference code's (d = 30, 5 heads, L = 5, attention 0.1, res/relu 0.1,
embed 0.25, out 0.0).

Padding and absence: padded tokens never act as keys and are excluded from the readout, so their
values cannot change h; a query with no real key attends to nothing (zero attention branch), and
a target with no real token reads out zeros (`mmjax/layers/masking.py`).

Deliberate deviations from the reference code, each documented here:
- padding is given by masks; the reference code has no key-padding mask and instead gives a
  position embedding of 0 to any step whose first input feature is exactly 0;
- no causal mask (the reference code's `--attn_mask` defaults to a shifted upper-triangular
  mask; the paper describes unmasked cross-modal attention);
- the input projection always runs (the reference code skips it when D_m = d);
- one attention dropout for every stack (the reference code uses 0.1 for stacks into text and the
  memory stacks, 0.0 for stacks into audio and vision: mmjax does not know which modality is text);
- the sinusoid is interleaved sin/cos from position 0 (the reference code concatenates sin and cos
  and counts from 1), a fixed change of basis of the same frequencies' family;
- embed dropout is applied in E only (the reference code also drops the raw text input).

Parameters: Σ_m d·D_m + M(M−1)·(L·C(d) + 2d) + M·(S·C((M−1)d) + 2(M−1)d) + 2(H² + H),
with C(w) = 12w² + 13w per block (attention 4w² + 4w, FFN 8w² + 5w, two LayerNorms 4w), 2w for
each stack's final LayerNorm, S = self_layers, and H = M(M−1)·d (the residual projection; 0
without it).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo
from mmjax.layers.masking import as_sequence, last_real_token, masked_mean
from mmjax.layers.transformer import FeedForward, MaskedAttention, sinusoidal_positions

Array = jax.Array


class CrossModalBlock(nn.Module):
  """y + MHA(LN(y), LN(source)) with one LN for both, then y + FFN(LN'(y)). With `source=None`,
  self-attention: y + MHA(LN(y), LN(y))."""
  num_heads: int
  attention_dropout: float
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y: Array, source: Array, mask: Array, *, train: bool) -> Array:
    norm = nn.LayerNorm(dtype=self.dtype, name="attention_norm")
    attended = MaskedAttention(self.num_heads, self.attention_dropout, self.dtype,
                               name="attention")(norm(y), norm(source), mask, train=train)
    y = y + nn.Dropout(self.dropout_rate, deterministic=not train)(attended)
    return y + FeedForward(4 * y.shape[-1], self.dropout_rate, nn.relu, self.dtype,
                           hidden_dropout_rate=self.dropout_rate,
                           name="feed_forward")(y, train=train)


class MulTStack(nn.Module):
  """One reference-code TransformerEncoder: E(queries) [and E(source)], L blocks, a LayerNorm."""
  num_layers: int
  num_heads: int
  attention_dropout: float
  dropout_rate: float
  embed_dropout: float
  dtype: Any = jnp.float32

  def embed(self, u: Array, *, train: bool) -> Array:
    scaled = jnp.sqrt(jnp.asarray(u.shape[-1], u.dtype)) * u
    scaled = scaled + sinusoidal_positions(u.shape[-2], u.shape[-1]).astype(u.dtype)
    return nn.Dropout(self.embed_dropout, deterministic=not train)(scaled)

  @nn.compact
  def __call__(self, queries: Array, query_mask: Array, source: Optional[Array] = None,
               source_mask: Optional[Array] = None, *, train: bool) -> Array:
    y = self.embed(queries, train=train)
    keys = y if source is None else self.embed(source, train=train)
    mask = nn.make_attention_mask(query_mask, query_mask if source is None else source_mask)
    for layer in range(self.num_layers):
      block = CrossModalBlock(self.num_heads, self.attention_dropout, self.dropout_rate,
                              self.dtype, name=f"layer_{layer}")
      y = block(y, y if source is None else keys, mask, train=train)
    return nn.LayerNorm(dtype=self.dtype, name="norm")(y)


def _parameter_count(widths, module) -> int:
  d, count, layers = module.model_dim, len(widths), module.num_layers
  self_layers = max(layers, 3) if module.self_layers is None else module.self_layers
  block = lambda w: 4 * w * w + 4 * w + 8 * w * w + 5 * w + 4 * w
  memory = (count - 1) * d
  hidden = count * memory
  return (d * sum(widths.values()) + count * (count - 1) * (layers * block(d) + 2 * d)
          + count * (self_layers * block(memory) + 2 * memory)
          + (2 * (hidden * hidden + hidden) if module.residual_projection else 0))


class MulTFusion(nn.Module):
  """`{m: (B, T_m, D_m)}`, masks `{m: (B, T_m)}` -> `(B, M·(M−1)·model_dim)`, for M ≥ 2."""
  model_dim: int = 30
  num_heads: int = 5
  num_layers: int = 5
  self_layers: Optional[int] = None
  pooling: str = "last"
  residual_projection: bool = True
  attention_dropout: float = 0.1
  dropout_rate: float = 0.1
  embed_dropout: float = 0.25
  out_dropout: float = 0.0
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=_parameter_count, additive=False, sequence=True,
      small=dict(model_dim=8, num_heads=2, num_layers=1, self_layers=1))

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    names = sorted(features)
    self.info.check_modalities("MulT", names)
    if self.pooling not in ("mean", "last"):
      raise ValueError(f"MulT pooling must be 'last' or 'mean', got {self.pooling!r}")
    self_layers = max(self.num_layers, 3) if self.self_layers is None else self.self_layers
    stack = lambda layers, name: MulTStack(layers, self.num_heads, self.attention_dropout,
                                           self.dropout_rate, self.embed_dropout, self.dtype,
                                           name=name)
    masks = masks or {}
    tokens, real = {}, {}
    for m in names:
      x, real[m] = as_sequence(features[m], masks.get(m), self.dtype)
      tokens[m] = nn.Dense(self.model_dim, use_bias=False, dtype=self.dtype,
                           name=f"{m}_projection")(x)
    pooled = []
    for target in names:
      streams = [stack(self.num_layers, f"{source}_to_{target}")(
          tokens[target], real[target], tokens[source], real[source], train=train)
                 for source in names if source != target]
      z = stack(self_layers, f"{target}_self")(jnp.concatenate(streams, axis=-1), real[target],
                                               train=train)          # (B, T_α, (M−1)·d)
      pooled.append(last_real_token(z, real[target]) if self.pooling == "last"
                    else masked_mean(z, real[target]))
    h = jnp.concatenate(pooled, axis=-1)
    if not self.residual_projection:
      return h
    hidden = nn.relu(nn.Dense(h.shape[-1], dtype=self.dtype, name="projection_1")(h))
    hidden = nn.Dropout(self.out_dropout, deterministic=not train)(hidden)
    return h + nn.Dense(h.shape[-1], dtype=self.dtype, name="projection_2")(hidden)
