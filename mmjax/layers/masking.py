"""Padding and absent modalities.

Masks are True for real positions. A sequence `(B, T, ...)` has a mask `(B, T)` with padding on the
right (real tokens form a prefix); any other input `(B, ...)` may have a presence mask `(B,)`.

An example whose mask is all False has no real input for that modality: the modality is absent
(what missing-modality evaluation produces). The semantics everywhere in mmjax:
- an encoder returns zeros for an absent example (for the LSTM this is its initial state h_0 = 0,
  the state before reading any token), so nothing about the padded values reaches the fusion;
- an attention query with no real key attends to nothing and yields zeros;
- pooling over no real token yields zeros.
So for an absent example the output never depends on the padded values, and stays finite.
"""
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


def any_real(mask: Array) -> Array:
  """`(B, T)` or `(B,)` -> `(B,)`: whether the example has at least one real position."""
  mask = mask.astype(bool)
  return mask.any(axis=tuple(range(1, mask.ndim))) if mask.ndim > 1 else mask


def zero_absent(features: Array, mask: Optional[Array]) -> Array:
  """`(B, ...)` with the examples that have no real position (`mask` all False) set to zero."""
  if mask is None:
    return features
  present = any_real(mask).reshape((-1,) + (1,) * (features.ndim - 1))
  return jnp.where(present, features, 0).astype(features.dtype)


def masked_mean(x: Array, mask: Array) -> Array:
  """`(B, T, D)`, `(B, T)` -> `(B, D)`: mean over real tokens; zeros when there is none."""
  total = jnp.where(mask[..., None], x, 0).sum(axis=-2)
  return total / jnp.maximum(mask.sum(axis=-1, keepdims=True), 1).astype(x.dtype)


def last_real_token(sequence: Array, mask: Optional[Array]) -> Array:
  """`sequence[b, length_b − 1]` from `(B, T, D)`; the last position when there is no mask, and
  zeros for an example with no real token."""
  if mask is None:
    return sequence[:, -1]
  lengths = mask.sum(axis=1).astype(jnp.int32)
  last = jnp.take_along_axis(sequence, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
  return jnp.where((lengths > 0)[:, None], last, 0).astype(sequence.dtype)


def as_sequence(feature: Array, mask: Optional[Array], dtype) -> tuple:
  """`(B, T, D)` or `(B, D)` -> `((B, T, D), (B, T) bool)` for the sequence fusions.

  A `(B, D)` vector is a length-1 real sequence (an encoder's output; the mask belonged to its
  input and the encoder already zeroed absent examples). A `(B,)` presence mask of a `(B, T, D)`
  sequence applies to all its tokens; no mask means all tokens are real.
  """
  x = feature.astype(dtype)
  if x.ndim == 2:
    return x[:, None], jnp.ones(x.shape[:1] + (1,), bool)
  if mask is None:
    return x, jnp.ones(x.shape[:2], bool)
  mask = mask.astype(bool)
  if mask.ndim == 1:
    mask = jnp.broadcast_to(mask[:, None], x.shape[:2])
  return x, mask
