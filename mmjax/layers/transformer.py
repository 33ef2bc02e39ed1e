"""Transformer building blocks shared by the text encoder and the sequence fusions (MulT, MBT)."""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """`(T, d)`: PE[t, 2i] = sin(t / 10000^{2i/d}), PE[t, 2i+1] = cos(t / 10000^{2i/d})."""
  position = np.arange(length)[:, None]
  frequency = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * frequency)
  table[:, 1::2] = np.cos(position * frequency)[:, :dim // 2]
  return table


class MaskedAttention(nn.Module):
  """Multi-head attention `(B, T_q, d)`, `(B, T_k, d)`, mask `(B, 1, T_q, T_k)` -> `(B, T_q, d)` in
  which a query with no real key attends to nothing and yields zeros (softmax over an all-masked
  row would otherwise average the padded values)."""
  num_heads: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: Array, keys: Array, mask: Array, *, train: bool) -> Array:
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
        deterministic=not train, name="attention")(queries, keys, mask=mask)
    has_key = mask.any(axis=(1, 3))[..., None]                          # (B, T_q, 1)
    return jnp.where(has_key, attended, 0).astype(attended.dtype)


class FeedForward(nn.Module):
  """The position-wise MLP branch of a pre-LN block:
  dropout(W_2 dropout_h(act(W_1 LN(x) + b_1)) + b_2), `hidden_dropout_rate` for dropout_h."""
  mlp_dim: int
  dropout_rate: float = 0.0
  activation: Callable[[Array], Array] = nn.gelu
  dtype: Any = jnp.float32
  hidden_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = self.activation(nn.Dense(self.mlp_dim, dtype=self.dtype)(y))
    y = nn.Dropout(self.hidden_dropout_rate, deterministic=not train)(y)
    y = nn.Dense(x.shape[-1], dtype=self.dtype)(y)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class TransformerBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); dropout on the
  attention weights and on both residual branches. A query with no real key gets a zero
  attention branch (see `MaskedAttention`)."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  activation: Callable[[Array], Array] = nn.gelu

  @nn.compact
  def __call__(self, x: Array, attention_mask: Optional[Array], *, train: bool) -> Array:
    if attention_mask is None:
      attention_mask = jnp.ones((x.shape[0], 1, x.shape[1], x.shape[1]), bool)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = MaskedAttention(self.num_heads, self.dropout_rate, self.dtype, name="attention")(
        y, y, attention_mask, train=train)
    x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    return x + FeedForward(self.mlp_dim, self.dropout_rate, self.activation, self.dtype,
                           name="feed_forward")(x, train=train)
