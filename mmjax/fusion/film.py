"""FiLM: Perez, Strub, de Vries, Dumoulin, Courville, 2018, "FiLM: Visual Reasoning with a General
Conditioning Layer" (AAAI).

One modality z (`conditioned`) is feature-wise affinely modulated by the others,
c = [z_{m_1}; ...] (the other modalities, in sorted key order):
    γ(c) = W_γ c + b_γ,   β(c) = W_β c + b_β     (B, D_z)
    h    = γ(c) ⊙ z + β(c)                       (B, D_z)
b_γ is initialised to 1 (and W_γ small), so that γ ≈ 1 and h ≈ z at initialisation; the equation
is the paper's. `conditioned=None` picks the first modality in sorted order.

Parameters: 2·D_z·(Σ_{m≠z} D_m + 1).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array


class FiLMFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, D_z)`, z = features[conditioned]."""
  conditioned: Optional[str] = None
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=lambda widths, module: (
      2 * widths[module.conditioned or min(widths)]
      * (sum(widths.values()) - widths[module.conditioned or min(widths)] + 1)), additive=False)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    names = sorted(features)
    self.info.check_modalities("FiLM", names)
    target = names[0] if self.conditioned is None else self.conditioned
    if target not in features:
      raise ValueError(f"FiLM conditioned={target!r} is not a modality; have {names}")
    others = [m for m in names if m != target]
    z = features[target].astype(self.dtype)
    context = jnp.concatenate([features[m].astype(self.dtype) for m in others], axis=-1)
    gamma = nn.Dense(z.shape[-1], dtype=self.dtype, bias_init=nn.initializers.ones,
                     kernel_init=nn.initializers.variance_scaling(0.1, "fan_in", "normal"),
                     name="gamma")(context)
    beta = nn.Dense(z.shape[-1], dtype=self.dtype, name="beta")(context)
    return gamma * z + beta
