"""Multiplicative interactions: Jayakumar, Czarnecki, Menick, Schwarz, Rae, Osindero, Teh, Harley,
Pascanu, 2020, "Multiplicative Interactions and Where to Find Them" (ICLR).

For exactly two modalities z_1 ∈ R^{D_1}, z_2 ∈ R^{D_2} (sorted key order),
    y_k = z_1ᵀ W_{::k} z_2 + z_1ᵀ U_{:k} + z_2ᵀ V_{:k} + b_k      (B, d)
with W ∈ R^{D_1 × D_2 × d}, U ∈ R^{D_1 × d}, V ∈ R^{D_2 × d}, b ∈ R^d: the most general
bilinear map of (z_1, z_2), i.e. a linear map whose weights (z_1ᵀ W + Vᵀ) are a linear function
of the other modality. Equals tensor fusion of two modalities followed by a full linear map.

Parameters: (D_1 + 1)(D_2 + 1)·d = D_1·D_2·d + D_1·d + D_2·d + d.
"""
import math
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array
_product = math.prod


class MultiplicativeFusion(nn.Module):
  """`{m_1: (B, D_1), m_2: (B, D_2)}` -> `(B, dim)`."""
  dim: int = 64
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=lambda widths, module: module.dim * _product(w + 1 for w in widths.values()),
      additive=False, min_modalities=2, max_modalities=2)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    names = sorted(features)
    self.info.check_modalities("multiplicative fusion (use 'low_rank' or 'tensor' for M != 2)",
                               names)
    z1, z2 = (features[m].astype(self.dtype) for m in names)
    w = self.param("W", nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                   (z1.shape[-1], z2.shape[-1], self.dim)).astype(self.dtype)
    bilinear = jnp.einsum("...i,ijk,...j->...k", z1, w, z2)
    u = nn.Dense(self.dim, use_bias=False, dtype=self.dtype, name="U")(z1)
    v = nn.Dense(self.dim, use_bias=True, dtype=self.dtype, name="V")(z2)   # V z2 + b
    return bilinear + u + v
