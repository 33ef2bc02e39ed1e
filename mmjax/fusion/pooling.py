"""Sum / mean / max pooling over modalities after projecting each to a common width d.

    p_m = W_m z_m + b_m                          (B, d) per modality
    h   = Σ_m p_m  |  (1/M) Σ_m p_m  |  max_m p_m  (elementwise)

Modalities in sorted key order (the result does not depend on it). Sum and mean followed by a
linear head are additive across modalities, like concat; max is piecewise additive (each output
unit comes from one modality at a time). Used as baselines in e.g. MultiBench (Liang et al., 2021,
"MultiBench: Multiscale Benchmarks for Multimodal Representation Learning").

Parameters: d·Σ_m (D_m + 1).
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo

Array = jax.Array

_REDUCERS = {"sum": jnp.sum, "mean": jnp.mean, "max": jnp.max}


def projection_parameter_count(widths, module) -> int:
  """d·Σ_m (D_m + 1): one `Dense(d)` per modality."""
  return module.dim * sum(w + 1 for w in widths.values())


class PoolingFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`, reducing the projections with `reduce` ∈ {sum, mean, max}."""
  dim: int = 64
  reduce: str = "sum"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    if self.reduce not in _REDUCERS:
      raise ValueError(f"pooling reduce must be one of {sorted(_REDUCERS)}, got {self.reduce!r}")
    projected = jnp.stack([nn.Dense(self.dim, dtype=self.dtype, name=f"{m}_projection")(
        features[m].astype(self.dtype)) for m in sorted(features)], axis=0)   # (M, B, d)
    return _REDUCERS[self.reduce](projected, axis=0)


class SumFusion(PoolingFusion):
  """h = Σ_m (W_m z_m + b_m)."""
  reduce: str = "sum"

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=projection_parameter_count,
                                          additive=True, min_modalities=1)


class MeanFusion(PoolingFusion):
  """h = (1/M) Σ_m (W_m z_m + b_m)."""
  reduce: str = "mean"

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=projection_parameter_count,
                                          additive=True, min_modalities=1)


class MaxFusion(PoolingFusion):
  """h = max_m (W_m z_m + b_m), elementwise."""
  reduce: str = "max"

  info: ClassVar[FusionInfo] = FusionInfo(parameter_count=projection_parameter_count,
                                          additive=False, min_modalities=1)
