"""Late fusion: one linear head per modality, outputs combined by a (learned) convex combination.

    y_m = W_m z_m + b_m                          (B, O) per modality, O = `dim`
    y   = Σ_m w_m y_m,  w = 1/M ("mean")  or  w = softmax(a), a ∈ R^M ("learned")

Modalities in sorted key order (a_m belongs to the m-th sorted name). The classic decision-level
fusion (e.g. Snoek et al., 2005, "Early versus late fusion in semantic video analysis") averages
per-modality logits. `MultimodalModel` applies its head after every fusion, so here y is a
representation of width O that the head maps on; with a linear head the whole model stays
linear and additive across modalities (head(Σ_m w_m y_m) = Σ_m w_m head(y_m)), i.e. exactly
late fusion of the composed per-modality linear classifiers. Set `dim` to the number of
classes to keep the per-modality outputs interpretable as logits.

Parameters: O·Σ_m (D_m + 1), plus M for mixing="learned".
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array


class LateFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`: the mixed per-modality linear outputs."""
  dim: int = 64
  mixing: str = "mean"
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=lambda widths, module: (module.dim * sum(w + 1 for w in widths.values())
                                              + (len(widths) if module.mixing == "learned" else 0)),
      additive=True, min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    names = sorted(features)
    outputs = jnp.stack([nn.Dense(self.dim, dtype=self.dtype, name=f"{m}_head")(
        features[m].astype(self.dtype)) for m in names], axis=0)          # (M, B, O)
    if self.mixing == "mean":
      return outputs.mean(axis=0)
    if self.mixing == "learned":
      logits = self.param("mixing_logits", nn.initializers.zeros, (len(names),))
      weights = jax.nn.softmax(logits).astype(self.dtype)
      return jnp.einsum("m,mbo->bo", weights, outputs)
    raise ValueError(f"late fusion mixing must be 'mean' or 'learned', got {self.mixing!r}")
