"""Gated multimodal unit (GMU): Arevalo, Solorio, Montes-y-Gómez, González, 2017, "Gated Multimodal
Units for Information Fusion" (ICLR workshop).

Modalities z_1, ..., z_M in sorted key order; each gets a hidden representation
    h_m = tanh(W_m z_m)                                   (B, d)
Two modalities, the paper's bimodal GMU (one gate and its complement):
    g = σ(W_g [z_1; z_2]),   h = g ⊙ h_1 + (1 − g) ⊙ h_2
M > 2 modalities, the paper's general GMU (its Fig. 2b): one independent sigmoid gate per modality,
    g_m = σ(W_gm [z_1; ...; z_M]),   h = Σ_m g_m ⊙ h_m      (`gate="sigmoid"`, the default)
The gates are not normalised: each modality's contribution is switched on or off on its own.
`gate="softmax"` (not the paper's) normalises them over modalities, g_m = softmax_m(W_gm [z]),
making h a convex combination of the h_m. The paper's equations have no biases (Θ = {W_m, W_g}),
and neither has the authors' code (johnarevalo/gmu-mmimdb, `GatedBimodal` and its `Linear(...,
use_bias=False)` projections), so `use_bias=False` is the default; `use_bias=True` adds one to
every linear map. One difference from the authors' code, where we follow the paper's equation:
their gate reads the projected features [W_1 z_1; W_2 z_2] (before tanh), the paper's reads the
inputs [z_1; z_2]. The authors' code has only the bimodal unit; the M > 2 form is the paper's.

Parameters (β = 1 if use_bias else 0, S = Σ_m D_m):
    d·Σ_m (D_m + β) + d·(S + β)        for M = 2
    d·Σ_m (D_m + β) + M·d·(S + β)      for M > 2
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array
_GATES = {"sigmoid": lambda logits: nn.sigmoid(logits),
          "softmax": lambda logits: jax.nn.softmax(logits, axis=-2)}


def _parameter_count(widths, module) -> int:
  bias, total, count = int(module.use_bias), sum(widths.values()), len(widths)
  gates = 1 if count == 2 else count
  return module.dim * sum(w + bias for w in widths.values()) + gates * module.dim * (total + bias)


class GatedMultimodalUnit(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`, for M ≥ 2 modalities."""
  dim: int = 64
  gate: str = "sigmoid"
  use_bias: bool = False
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=_parameter_count, additive=False)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    names = sorted(features)
    self.info.check_modalities("the GMU", names)
    if self.gate not in _GATES:
      raise ValueError(f"GMU gate must be one of {sorted(_GATES)}, got {self.gate!r}")
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
    gates = _GATES[self.gate](logits.reshape(*logits.shape[:-1], len(names), self.dim))
    return jnp.einsum("...md,m...d->...d", gates, hidden)
