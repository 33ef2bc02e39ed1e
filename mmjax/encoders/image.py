"""Image encoders: images `(B, H, W, C)` float -> features `(B, D)`.

Normalisation layers are GroupNorm, not BatchNorm, so every encoder is a pure function of its
parameters and inputs (no mutable batch statistics in the train step).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class ConvPoolImageEncoder(nn.Module):
  """3x3 convolution (C channels, same padding) -> ReLU -> global average pool: `(B, C)`.

  Parameters: C(9·C_in + 1).
  """
  channels: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del mask, train
    x = nn.Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype)(images.astype(self.dtype))
    return nn.relu(x).mean(axis=(1, 2))


class ResidualBlock(nn.Module):
  """Basic residual block: x + conv(relu(norm(conv(relu(norm(x)))))), projecting x when the shape changes."""
  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    groups = min(8, self.channels)
    y = nn.relu(nn.GroupNorm(num_groups=min(8, x.shape[-1]), dtype=self.dtype)(x))
    y = nn.Conv(self.channels, (3, 3), strides=self.stride, padding="SAME", dtype=self.dtype)(y)
    y = nn.relu(nn.GroupNorm(num_groups=groups, dtype=self.dtype)(y))
    y = nn.Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype)(y)
    if x.shape[-1] != self.channels or self.stride != 1:
      x = nn.Conv(self.channels, (1, 1), strides=self.stride, dtype=self.dtype, name="projection")(x)
    return x + y


class ResNetImageEncoder(nn.Module):
  """Small pre-activation ResNet: stem conv, stages of residual blocks (stride 2 between stages),
  norm -> ReLU -> global average pool: `(B, C_last)`."""
  stage_channels: Sequence[int] = (32, 64)
  blocks_per_stage: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del mask, train
    x = nn.Conv(self.stage_channels[0], (3, 3), padding="SAME", dtype=self.dtype,
                name="stem")(images.astype(self.dtype))
    for stage, channels in enumerate(self.stage_channels):
      for block in range(self.blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(channels, stride, self.dtype, name=f"stage{stage}_block{block}")(x)
    x = nn.relu(nn.GroupNorm(num_groups=min(8, x.shape[-1]), dtype=self.dtype)(x))
    return x.mean(axis=(1, 2))
