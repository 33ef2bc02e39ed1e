"""Tensor fusion: Zadeh, Chen, Poria, Cambria, Morency, 2017, "Tensor Fusion Network for Multimodal
Sentiment Analysis" (EMNLP).

With the M modalities in sorted key order and each vector extended by a constant 1 in LAST place,
v_k = [z_k; 1] ∈ R^{D_k + 1}, the fusion is the flattened outer product
    h = vec(v_1 ⊗ v_2 ⊗ ... ⊗ v_M)               (B, Π_k (D_k + 1))
flattened row-major (the last modality varies fastest):
    h[Σ_k i_k·S_k] = Π_k v_k[i_k],   S_k = Π_{l>k} (D_l + 1),   0 ≤ i_k ≤ D_k,
where v_k[D_k] = 1. So h holds every unimodal term z_k[i] (all other indices at their D_l), every
bimodal term z_k[i]·z_l[j], ..., every M-modal product, and the constant 1 at the last index
Π_k (D_k + 1) − 1. A linear head on h is a full multilinear (degree-M) polynomial of the inputs.

Parameters: 0 (the paper's subsequent "sentiment inference" MLP is the model's head here).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array


def append_one(z: Array) -> Array:
  """`(..., D)` -> `(..., D + 1)`: [z; 1]."""
  return jnp.concatenate([z, jnp.ones((*z.shape[:-1], 1), z.dtype)], axis=-1)


class TensorFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, Π_m (D_m + 1))`."""
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=lambda widths, module: 0,
                                          additive=False, min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    vectors = [append_one(features[m].astype(self.dtype)) for m in sorted(features)]
    fused = vectors[0]
    for v in vectors[1:]:
      fused = (fused[..., :, None] * v[..., None, :]).reshape(*v.shape[:-1], -1)
    return fused
