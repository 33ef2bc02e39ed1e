"""Low-rank multimodal fusion (LMF): Liu, Shen, Lakshminarasimhan, Liang, Zadeh, Morency, 2018,
"Efficient Low-rank Multimodal Fusion with Modality-Specific Factors" (ACL).

With the M modalities in sorted key order and v_m = [z_m; 1] ∈ R^{D_m + 1},
    h = Σ_{i=1}^r λ_i ⊙_m (W_m^(i)ᵀ v_m) + b     (B, d)
with factors W_m^(i) ∈ R^{(D_m + 1) × d}, scalar rank weights λ_i (`rank_weights=True`, as in the
authors' code; λ ≡ 1 otherwise) and a bias b ∈ R^d. This equals tensor fusion followed by a linear
map, h = vec(v_1 ⊗ ... ⊗ v_M)ᵀ W + b, whose weight tensor has CP rank ≤ r:
    W = Σ_i λ_i W_1^(i) ⊗ W_2^(i) ⊗ ... ⊗ W_M^(i)   ∈ R^{(D_1+1) × ... × (D_M+1) × d},
at O(r·d·Σ_m D_m) instead of O(d·Π_m D_m) cost. Each factor is a flax param `{m}_factor` of shape
`(r, D_m + 1, d)`, so all of them are trained (MultiBench kept them in a Python list, where they
were never registered nor updated).

Parameters: r·d·Σ_m (D_m + 1) + d, plus r with rank_weights.
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo
from mmjax.fusion.tensor import append_one

Array = jax.Array


class LowRankFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`."""
  dim: int = 64
  rank: int = 4
  rank_weights: bool = True
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=lambda widths, module: (
          module.rank * module.dim * sum(w + 1 for w in widths.values()) + module.dim
          + (module.rank if module.rank_weights else 0)),
      additive=False, min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    fused = None
    for m in sorted(features):
      v = append_one(features[m].astype(self.dtype))
      factor = self.param(f"{m}_factor",
                          nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=0),
                          (self.rank, v.shape[-1], self.dim))
      projected = jnp.einsum("...k,rkd->...rd", v, factor.astype(self.dtype))   # (B, r, d)
      fused = projected if fused is None else fused * projected
    if self.rank_weights:
      weights = self.param("rank_weights", nn.initializers.constant(1.0 / self.rank), (self.rank,))
    else:
      weights = jnp.ones((self.rank,))
    bias = self.param("bias", nn.initializers.zeros, (self.dim,))
    return jnp.einsum("r,...rd->...d", weights.astype(self.dtype), fused) + bias.astype(self.dtype)
