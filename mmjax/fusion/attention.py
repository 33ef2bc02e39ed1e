"""Attention-weighted fusion over modalities: project, score, softmax over modalities, weighted sum.

    p_m = W_m z_m + b_m                          (B, d) per modality
    s_m = vᵀ tanh(W_a p_m + b_a)                 (B,)   scoring MLP shared across modalities
    α   = softmax_m(s_1, ..., s_M)               (B, M)
    h   = Σ_m α_m p_m                            (B, d)

Modalities in sorted key order (the result does not depend on it). The additive-attention score
of Bahdanau, Cho, Bengio, 2015, "Neural Machine Translation by Jointly Learning to Align and
Translate", applied over modalities instead of time steps (as in e.g. Hori et al., 2017,
"Attention-Based Multimodal Fusion for Video Description"). The weights depend on all inputs, so
the fusion is not additive across modalities.

Parameters: d·Σ_m (D_m + 1) + a·(d + 1) + a, with a = `attention_dim`.
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo
from mmjax.fusion.pooling import projection_parameter_count

Array = jax.Array


class AttentionFusion(nn.Module):
  """`{m: (B, D_m)}` -> `(B, dim)`."""
  dim: int = 64
  attention_dim: int = 64
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=lambda widths, module: (projection_parameter_count(widths, module)
                                              + module.attention_dim * (module.dim + 2)),
      additive=False, min_modalities=1)

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    del masks, train
    projected = jnp.stack([nn.Dense(self.dim, dtype=self.dtype, name=f"{m}_projection")(
        features[m].astype(self.dtype)) for m in sorted(features)], axis=-2)  # (B, M, d)
    hidden = nn.Dense(self.attention_dim, dtype=self.dtype, name="score_hidden")(projected)
    hidden = jnp.tanh(hidden)
    scores = nn.Dense(1, use_bias=False, dtype=self.dtype, name="score")(hidden)[..., 0]  # (B, M)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
    return jnp.einsum("...m,...md->...d", weights, projected)
