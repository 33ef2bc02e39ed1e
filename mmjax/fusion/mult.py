"""Multimodal Transformer (MulT): Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov, 2019,
"Multimodal Transformer for Unaligned Multimodal Language Sequences" (ACL).

Inputs are token sequences `features[m]: (B, T_m, D_m)` of possibly different lengths (unaligned),
with `masks[m]: (B, T_m)` True for real tokens (right padding); a `(B, D_m)` vector is a length-1
sequence (and its mask, which then belongs to the encoder's input, is ignored). Modalities in
sorted key order. With d = `model_dim`:
  1. X_m = Conv1D_{k=1}(z_m) + PE = z_m W_m + b_m + PE          (B, T_m, d)   (PE: sinusoidal)
  2. for every target α and source β ≠ α, a stack of L cross-modal layers (pre-LayerNorm):
        Y^[0] = X_α
        Y^[l] = Y^[l-1] + MHA(Q = LN(Y^[l-1]), K = V = LN(X_β)),   keys masked by masks[β]
        Y^[l] = Y^[l] + MLP(LN(Y^[l]))
     the keys/values always come from the source's low-level X_β, as in the paper;
  3. Z_α = [Y_{β_1→α}; Y_{β_2→α}; ...]  (B, T_α, (M−1)·d), then `self_layers` self-attention
     layers over Z_α and a LayerNorm;
  4. pooling over α's real tokens: masked mean, or the last real token (the paper's choice);
  5. h = [pool(Z_{α_1}); pool(Z_{α_2}); ...]                       (B, M·(M−1)·d).
Padded tokens never act as keys and are excluded from the pooling, so their values cannot change h.
"""
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.encoders.text import TransformerBlock, last_real_token

Array = jax.Array


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """`(T, d)`: PE[t, 2i] = sin(t / 10000^{2i/d}), PE[t, 2i+1] = cos(t / 10000^{2i/d})."""
  position = np.arange(length)[:, None]
  frequency = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * frequency)
  table[:, 1::2] = np.cos(position * frequency)[:, :dim // 2]
  return table


def as_sequence(feature: Array, mask: Optional[Array], dtype: Any) -> Tuple[Array, Array]:
  """`(B, T, D)` or `(B, D)` (a length-1 sequence; `mask` ignored) -> `((B, T, D), (B, T) bool)`;
  no mask = all tokens real."""
  x = feature.astype(dtype)
  if x.ndim == 2:
    return x[:, None], jnp.ones(x.shape[:1] + (1,), bool)
  if mask is None:
    return x, jnp.ones(x.shape[:2], bool)
  return x, mask.astype(bool)


def masked_mean(x: Array, mask: Array) -> Array:
  """`(B, T, D)`, `(B, T)` -> `(B, D)`: mean over real tokens (padded values never read)."""
  total = jnp.where(mask[..., None], x, 0).sum(axis=-2)
  return total / jnp.maximum(mask.sum(axis=-1, keepdims=True), 1).astype(x.dtype)


class CrossModalBlock(nn.Module):
  """Pre-LN cross-attention block: y + MHA(LN(y), LN(source)), then y + MLP(LN(y))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y: Array, source: Array, source_mask: Array, *, train: bool) -> Array:
    keys = nn.LayerNorm(dtype=self.dtype, name="source_norm")(source)
    queries = nn.LayerNorm(dtype=self.dtype, name="target_norm")(y)
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
        deterministic=not train)(queries, keys, keys, mask=source_mask[:, None, None, :])
    y = y + nn.Dropout(self.dropout_rate, deterministic=not train)(attended)
    hidden = nn.Dense(self.mlp_dim, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(y))
    hidden = nn.Dense(y.shape[-1], dtype=self.dtype)(nn.gelu(hidden))
    return y + nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)


class MulTFusion(nn.Module):
  """`{m: (B, T_m, D_m)}`, masks `{m: (B, T_m)}` -> `(B, M·(M−1)·model_dim)`, for M ≥ 2."""
  model_dim: int = 32
  num_heads: int = 4
  num_layers: int = 2
  self_layers: int = 1
  mlp_ratio: int = 4
  pooling: str = "mean"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    names = sorted(features)
    if len(names) < 2:
      raise ValueError(f"MulT attends across modalities and needs at least 2, got {names}")
    if self.pooling not in ("mean", "last"):
      raise ValueError(f"MulT pooling must be 'mean' or 'last', got {self.pooling!r}")
    masks = masks or {}
    tokens, real = {}, {}
    for m in names:
      x, real[m] = as_sequence(features[m], masks.get(m), self.dtype)
      x = nn.Dense(self.model_dim, dtype=self.dtype, name=f"{m}_projection")(x)
      tokens[m] = x + sinusoidal_positions(x.shape[-2], self.model_dim).astype(self.dtype)
    mlp_dim = self.mlp_ratio * self.model_dim
    pooled = []
    for target in names:
      streams = []
      for source in names:
        if source == target:
          continue
        y = tokens[target]
        for layer in range(self.num_layers):
          y = CrossModalBlock(self.num_heads, mlp_dim, self.dropout_rate, self.dtype,
                              name=f"{source}_to_{target}_{layer}")(
                                  y, tokens[source], real[source], train=train)
        streams.append(y)
      z = jnp.concatenate(streams, axis=-1)                          # (B, T_α, (M−1)·d)
      self_mask = nn.make_attention_mask(real[target], real[target])
      for layer in range(self.self_layers):
        z = TransformerBlock(self.num_heads, self.mlp_ratio * z.shape[-1], self.dropout_rate,
                             self.dtype, name=f"{target}_self_{layer}")(z, self_mask, train=train)
      z = nn.LayerNorm(dtype=self.dtype, name=f"{target}_norm")(z)
      pooled.append(masked_mean(z, real[target]) if self.pooling == "mean"
                    else last_real_token(z, real[target]))
    return jnp.concatenate(pooled, axis=-1)
