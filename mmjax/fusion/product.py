"""Elementwise (Hadamard) product after projecting each modality to a common width d.

    h = ⊙_m (W_m z_m + b_m)                      (B, d)

Modalities in sorted key order (the result does not depend on it). Multiplicative: each output
unit is a degree-M polynomial with one factor per modality, so d²h/dz_1 dz_2 ≠ 0. It is the
rank-1, single-factor special case of low-rank fusion (Liu et al., 2018) and the "Hadamard
product" fusion of e.g. Kim et al., 2017, "Hadamard Product for Low-rank Bilinear Pooling".

Parameters: d·Σ_m (D_m + 1).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo
from mmjax.fusion.pooling import projection_parameter_count

Array = jax.Array


class ProductFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`."""
  dim: int = 64
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=projection_parameter_count,
                                          additive=False, min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    projected = [nn.Dense(self.dim, dtype=self.dtype, name=f"{m}_projection")(
        features[m].astype(self.dtype)) for m in sorted(features)]
    return jnp.prod(jnp.stack(projected, axis=0), axis=0)
