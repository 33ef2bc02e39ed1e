"""Task heads: fused features `(B, D)` -> task outputs (e.g. logits `(B, K)`)."""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class LinearHead(nn.Module):
  """logits = h W + b. Parameters: K(D + 1)."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fused: Array, *, train: bool = False) -> Array:
    del train
    return nn.Dense(self.num_classes, dtype=self.dtype)(fused).astype(jnp.float32)


class MLPHead(nn.Module):
  """logits = W_L(... relu(W_1 h + b_1) ...) + b_L, with dropout between hidden layers."""
  num_classes: int
  hidden_dims: Sequence[int] = (256,)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, fused: Array, *, train: bool = False) -> Array:
    x = fused
    for width in self.hidden_dims:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


HEADS = {
    "linear": LinearHead,
    "mlp": MLPHead,
}
