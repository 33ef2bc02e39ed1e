"""Early fusion by concatenation.

h = [z_1; z_2; ...; z_M]  with modalities in sorted key order; z_m of shape `(B, D_m)`, h of shape
`(B, Σ_m D_m)`. No parameters. Followed by a linear head this is additive across modalities
(logits = Σ_m W_m z_m + b), so it cannot represent interactions (e.g. XOR-like synergy).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array


class ConcatFusion(nn.Module):
  """`features: {modality: (B, D_m)}` -> `(B, Σ_m D_m)`. Parameters: 0."""
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=lambda widths, module: 0, additive=True,
                                          min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    return jnp.concatenate([features[m].astype(self.dtype) for m in sorted(features)], axis=-1)
