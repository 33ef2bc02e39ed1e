"""Multimodal bottleneck transformer (MBT): Nagrani, Yang, Arnab, Jansen, Schmid, Sun, 2021,
"Attention Bottlenecks for Multimodal Fusion" (NeurIPS); reference code google-research/scenic
(`projects/mbt/model.py`).

Inputs are token sequences `features[m]: (B, T_m, D_m)` with `masks[m]: (B, T_m)` True for real
tokens; a `(B, D_m)` vector is a length-1 sequence (its mask ignored). Modalities in sorted key
order. Each modality has its own L = `num_layers` pre-LN transformer layers θ_m^l (separate
parameters). With X_m^0 = [cls_m; z_m W_m + b_m] + PE (a learned CLS token per modality, zero at
initialisation, in front; `pooling="mean"` drops it) and L_f = `fusion_layer`:
    l < L_f:   X_m^{l+1} = Transformer(X_m^l; θ_m^l)                       (independent)
    l ≥ L_f:   [X_m^{l+1}; F̂_m^{l+1}] = Transformer([X_m^l; F^l]; θ_m^l)  (B bottleneck tokens F)
               F^{l+1} = (1/M) Σ_m F̂_m^{l+1}
F^{L_f} is a learned `(num_bottlenecks, d)` parameter (N(0, 0.02²) at initialisation, as in
scenic). Cross-modal information flows only through the few bottleneck tokens. Output: per
modality, LayerNorm then its CLS token (`pooling="cls"`, the paper's classifier input) or the
masked mean over its real tokens (`pooling="mean"`), combined by mean (`combine="mean"`: a linear
head then gives the paper's average of the per-modality logits) or concatenation.

The paper classifies from the CLS tokens and averages the per-modality logits, which is the default
here. scenic's released AudioSet config instead uses `classifier='gap'` (one mean over every
modality's tokens) and, in 'token' mode, trains on the mean of per-modality losses rather than the
loss of the averaged logits; mmjax follows the paper. Deviation: positions are sinusoidal (scenic
learns them per input length); the CLS token gets position 0 in both.

With L_f = L no bottleneck is used and the fusion is exactly late fusion: modality m's output
depends on z_m only. So is L_f = L − 1: the last layer writes the other modalities into F^L, which
no layer reads (as in the paper, the final bottleneck tokens are discarded); cross-modal flow needs
L − L_f ≥ 2. Padded tokens are masked as keys and excluded from the pooling, so their values cannot
change the output; a modality with no real token still has its (real) CLS token, which reads only
the bottlenecks, and reads out zeros with `pooling="mean"`.

Parameters: Σ_m [d(D_m + 1) + 2d] + M·L·(4d(d + 1) + 2·d·f + f + d + 4d) + n_b·d (if L_f < L)
(+ M·d with CLS), with f = mlp_ratio·d, n_b = num_bottlenecks.
"""
from typing import Any, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.fusion.info import FusionInfo
from mmjax.layers.masking import as_sequence, masked_mean
from mmjax.layers.transformer import TransformerBlock, sinusoidal_positions

Array = jax.Array


def _parameter_count(widths, module) -> int:
  d, f, count = module.model_dim, module.mlp_ratio * module.model_dim, len(widths)
  block = 4 * d * (d + 1) + 2 * d * f + f + d + 4 * d
  return (sum(d * (w + 1) + 2 * d for w in widths.values()) + count * module.num_layers * block
          + (module.num_bottlenecks * d if module.fusion_layer < module.num_layers else 0)
          + (count * d if module.pooling == "cls" else 0))


class MBTFusion(nn.Module):
  """`{m: (B, T_m, D_m)}`, masks `{m: (B, T_m)}` -> `(B, d)` (combine="mean") or `(B, M·d)`."""
  model_dim: int = 32
  num_heads: int = 4
  num_layers: int = 4
  fusion_layer: int = 2
  num_bottlenecks: int = 4
  mlp_ratio: int = 4
  pooling: str = "cls"
  combine: str = "mean"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  info: ClassVar[FusionInfo] = FusionInfo(
      parameter_count=_parameter_count, additive=False, min_modalities=1, sequence=True,
      small=dict(model_dim=8, num_heads=2, num_layers=2, fusion_layer=0, num_bottlenecks=2,
                 mlp_ratio=1))

  @nn.compact
  def __call__(self, features: Mapping[str, Array], masks: Optional[Mapping[str, Array]] = None,
               *, train: bool = False) -> Array:
    if not 0 <= self.fusion_layer <= self.num_layers:
      raise ValueError(f"MBT fusion_layer={self.fusion_layer} must lie in [0, num_layers="
                       f"{self.num_layers}]; fusion_layer=num_layers is late fusion")
    if self.pooling not in ("mean", "cls") or self.combine not in ("mean", "concat"):
      raise ValueError(f"MBT pooling must be 'cls' or 'mean' and combine 'mean' or 'concat', got "
                       f"{self.pooling!r}, {self.combine!r}")
    names = sorted(features)
    self.info.check_modalities("MBT", names)
    masks = masks or {}
    tokens, real = {}, {}
    for m in names:
      x, mask = as_sequence(features[m], masks.get(m), self.dtype)
      x = nn.Dense(self.model_dim, dtype=self.dtype, name=f"{m}_projection")(x)
      if self.pooling == "cls":
        cls = self.param(f"{m}_cls", nn.initializers.zeros, (self.model_dim,))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, x.shape[-1])),
                             x], axis=-2)
        mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], axis=-1)
      tokens[m] = x + sinusoidal_positions(x.shape[-2], self.model_dim).astype(self.dtype)
      real[m] = mask

    mlp_dim = self.mlp_ratio * self.model_dim
    block = lambda m, layer: TransformerBlock(self.num_heads, mlp_dim, self.dropout_rate,
                                              self.dtype, name=f"{m}_layer_{layer}")
    bottleneck = None
    for layer in range(self.num_layers):
      if layer < self.fusion_layer:
        for m in names:
          tokens[m] = block(m, layer)(tokens[m], nn.make_attention_mask(real[m], real[m]),
                                      train=train)
        continue
      if bottleneck is None:
        init = self.param("bottleneck", nn.initializers.normal(0.02),
                          (self.num_bottlenecks, self.model_dim))
        batch = tokens[names[0]].shape[0]
        bottleneck = jnp.broadcast_to(init.astype(self.dtype), (batch, *init.shape))
      updated = []
      for m in names:
        length = tokens[m].shape[-2]
        mask = jnp.concatenate([real[m], jnp.ones(bottleneck.shape[:2], bool)], axis=-1)
        joint = block(m, layer)(jnp.concatenate([tokens[m], bottleneck], axis=-2),
                                nn.make_attention_mask(mask, mask), train=train)
        tokens[m] = joint[:, :length]
        updated.append(joint[:, length:])
      bottleneck = jnp.mean(jnp.stack(updated, axis=0), axis=0)

    pooled = []
    for m in names:
      x = nn.LayerNorm(dtype=self.dtype, name=f"{m}_norm")(tokens[m])
      pooled.append(x[:, 0] if self.pooling == "cls" else masked_mean(x, real[m]))
    if self.combine == "concat":
      return jnp.concatenate(pooled, axis=-1)
    return jnp.mean(jnp.stack(pooled, axis=0), axis=0)
