"""Gated multimodal unit (GMU): Arevalo, Solorio, Montes-y-Gómez, González, 2017, "Gated Multimodal
Units for Information Fusion" (ICLR workshop).

Two modalities (z_1, z_2 in sorted key order), exactly the paper's equations:
    h_m = tanh(W_m z_m)                          (B, d)
    g   = σ(W_g [z_1; z_2])                      (B, d)
    h   = g ⊙ h_1 + (1 − g) ⊙ h_2
M > 2 modalities, the paper's multi-gate generalisation: one gate per modality and hidden unit,
normalised over modalities,
    [a_1; ...; a_M] = W_g [z_1; ...; z_M]        (B, M·d)
    g_m = softmax_m(a_1, ..., a_M)               (per hidden unit)
    h   = Σ_m g_m ⊙ h_m
(for M = 2 this equals the sigmoid form with a = a_1 − a_2, but with twice the gate weights, so
M = 2 keeps the single sigmoid gate.) With `use_bias=True` (default) every linear map also has a
bias; `use_bias=False` gives the equations verbatim.

Parameters (β = 1 if use_bias else 0, S = Σ_m D_m):
    d·Σ_m (D_m + β) + d·(S + β)        for M = 2
    d·Σ_m (D_m + β) + M·d·(S + β)      for M > 2
"""
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class GatedMultimodalUnit(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`, for M ≥ 2 modalities."""
  dim: int = 64
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    names = sorted(features)
    if len(names) < 2:
      raise ValueError(f"the GMU gates between modalities and needs at least 2, got {names}")
    z = [features[m].astype(self.dtype) for m in names]
    hidden = jnp.stack([jnp.tanh(nn.Dense(self.dim, use_bias=self.use_bias, dtype=self.dtype,
                                          name=f"{m}_hidden")(z_m))
                        for m, z_m in zip(names, z)], axis=0)                  # (M, B, d)
    joint = jnp.concatenate(z, axis=-1)
    if len(names) == 2:
      gate = nn.sigmoid(nn.Dense(self.dim, use_bias=self.use_bias, dtype=self.dtype,
                                 name="gate")(joint))
      return gate * hidden[0] + (1 - gate) * hidden[1]
    logits = nn.Dense(len(names) * self.dim, use_bias=self.use_bias, dtype=self.dtype,
                      name="gate")(joint)
    gates = jax.nn.softmax(logits.reshape(*logits.shape[:-1], len(names), self.dim), axis=-2)
    return jnp.einsum("...md,m...d->...d", gates, hidden)
