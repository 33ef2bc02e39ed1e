"""Encoders for feature vectors `(B, D_in)` with an optional presence mask `(B,)`: to a vector
`(B, D)` or to a token sequence `(B, T, D)`; an absent example (mask False) encodes to zeros."""
from typing import Any, ClassVar, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.masking import zero_absent

Array = jax.Array


class MLPEncoder(nn.Module):
  """x -> relu(W_1 x + b_1) -> ... -> W_L h + b_L: `(B, D_in)` -> `(B, dim)`."""
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "D")
  hidden_dims: Sequence[int] = (32,)
  dim: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    x = features.astype(self.dtype)
    for width in self.hidden_dims:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return zero_absent(nn.Dense(self.dim, dtype=self.dtype)(x), mask)


class FeatureTokensEncoder(nn.Module):
  """Splits `(B, D_in)` into `num_tokens` equal chunks and embeds each with a shared MLP plus a
  learned position embedding: `(B, num_tokens, model_dim)`, for the sequence-level fusions."""
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "D")
  num_tokens: int = 4
  model_dim: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    batch, width = features.shape
    if width % self.num_tokens:
      raise ValueError(f"feature width {width} is not divisible by num_tokens={self.num_tokens}; "
                       "pick a divisor")
    chunks = features.astype(self.dtype).reshape(batch, self.num_tokens, width // self.num_tokens)
    x = nn.Dense(self.model_dim, dtype=self.dtype)(chunks)
    x = nn.Dense(self.model_dim, dtype=self.dtype)(nn.relu(x))
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.num_tokens, self.model_dim))
    return zero_absent(x + positions.astype(self.dtype), mask)
