"""Pure loss functions with an explicit `reduction` ('mean', 'sum' or 'none')."""
from typing import Optional

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def reduce_weighted(values: Array, weights: Optional[Array], reduction: str) -> Array:
  """Weighted mean/sum over examples; `weights` (B,) zero out padding examples."""
  if weights is not None:
    values = values * weights
  if reduction == "none":
    return values
  if reduction == "sum":
    return values.sum()
  if reduction == "mean":
    count = values.size if weights is None else weights.sum()
    return values.sum() / jnp.maximum(count, 1)
  raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")


def softmax_cross_entropy(logits: Array, labels: Array, weights: Optional[Array] = None,
                          reduction: str = "mean") -> Array:
  """-log softmax(logits)[label] for integer labels; logits `(B, K)`, labels `(B,)`."""
  values = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return reduce_weighted(values, weights, reduction)


LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
}
