"""Multi-modal factorized bilinear pooling (MFB): Yu, Yu, Fan, Tao, 2017, "Multi-modal Factorized
Bilinear Pooling with Co-Attention Learning for Visual Question Answering" (ICCV).

For exactly two modalities x ∈ R^{D_1}, y ∈ R^{D_2} (sorted key order), factor k, output o:
    e = (Uᵀx + b_U) ⊙ (Vᵀy + b_V)                (B, k·o),  U ∈ R^{D_1 × ko}, V ∈ R^{D_2 × ko}
    s_j = Σ_{t<k} e_{j·k + t}                    (B, o)  sum pooling over non-overlapping windows
    p = sign(s) √|s|                             power normalisation
    h = p / ‖p‖_2                                L2 normalisation
with dropout on e during training, as in the paper. sign(s)√|s| has an infinite slope at s = 0,
and ‖p‖ is not differentiable at p = 0; for finite, stable gradients we compute
    p = s / √(|s| + ε)          (odd, continuous, slope 1/√ε at 0, → sign(s)√|s| for |s| ≫ ε)
    h = p / √(‖p‖² + ε)
so h differs from the paper's value by a relative O(ε / |s|) and O(ε / ‖p‖²). Both
normalisations are computed in float32 whatever `dtype`.

Parameters: k·o·(D_1 + 1) + k·o·(D_2 + 1).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array


class MFBFusion(nn.Module):
  """`{m_1: (B, D_1), m_2: (B, D_2)}` -> `(B, dim)`, unit L2 norm per row."""
  dim: int = 64
  factor: int = 5
  dropout_rate: float = 0.0
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=lambda widths, module: module.factor * module.dim * sum(
          w + 1 for w in widths.values()),
      additive=False, min_modalities=2, max_modalities=2)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks
    names = sorted(features)
    self.info.check_modalities("MFB (use 'low_rank' for M != 2)", names)
    width = self.factor * self.dim
    x, y = (nn.Dense(width, dtype=self.dtype, name=f"{m}_projection")(
        features[m].astype(self.dtype)) for m in names)
    e = nn.Dropout(self.dropout_rate, deterministic=not train)(x * y)
    s = e.reshape(*e.shape[:-1], self.dim, self.factor).sum(axis=-1)
    s = s.astype(jnp.float32)
    p = s / jnp.sqrt(jnp.abs(s) + self.epsilon)
    h = p / jnp.sqrt(jnp.sum(p * p, axis=-1, keepdims=True) + self.epsilon)
    return h.astype(self.dtype)
