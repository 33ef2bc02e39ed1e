"""Image encoders: images `(B, H, W, C)` float, an optional presence mask `(B,)` -> features `(B, D)`.

Normalisation layers are GroupNorm or LayerNorm, not BatchNorm, so every encoder is a pure
function of its parameters and inputs (no mutable batch statistics in the train step). An absent
image (mask False) encodes to zeros (`mmjax/layers/masking.py`).
"""
import functools
from typing import Any, ClassVar, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.masking import zero_absent
from mmjax.layers.transformer import TransformerBlock, sinusoidal_positions

Array = jax.Array


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_same(images: Array, kernel: Array) -> Array:
  return jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME", dimension_numbers=_NHWC)


def _max_pool_2x2(x: Array) -> Array:
  """2x2 max pool, stride 2, flooring odd sizes, as a reshape and a max: the same values and
  gradients as `nn.max_pool`, whose select-and-scatter gradient is slow on XLA's CPU backend."""
  batch, height, width, channels = x.shape
  h, w = height // 2, width // 2
  return x[:, :2 * h, :2 * w].reshape(batch, h, 2, w, 2, channels).max(axis=(2, 4))


def _conv_relu_mean_pool(images: Array, kernel: Array, bias: Array) -> Array:
  return jnp.maximum(_conv_same(images, kernel) + bias, 0).mean(axis=(1, 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_relu_mean_pool(images: Array, kernel: Array, bias: Array, chunk_size: int) -> Array:
  """mean_{h,w} relu(conv(x, K) + b): `(B, H, W, C_in)`, K `(k_h, k_w, C_in, C)` -> `(B, C)`,
  same padding, stride 1, any kernel size: per axis, (k − 1) // 2 zeros before and k // 2 after
  (XLA's SAME padding, so the backward pass matches the forward for even kernels too).

  The gradient is exact but never materialises the `(B, H, W, C)` activation map: the forward
  pass fuses the convolution into the pooling reduction, and the backward pass recomputes the
  ReLU mask `chunk_size` images at a time, with
      dL/dK[k, c] = Σ_{b,p} patch[b, p, k] · 1[pre[b, p, c] > 0] · g[b, c] / (H·W).
  On a CPU the full map (268 MB at 64 images of 64x64 with 256 channels) costs far more in
  memory traffic than the arithmetic; `chunk_size` must divide the batch.
  """
  return _conv_relu_mean_pool(images, kernel, bias)


def same_padding(kernel_size: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
  """Stride-1 SAME padding per spatial axis: ((k − 1) // 2 before, k // 2 after)."""
  return tuple(((k - 1) // 2, k // 2) for k in kernel_size)


def _forward(images, kernel, bias, chunk_size):
  return _conv_relu_mean_pool(images, kernel, bias), (images, kernel, bias)


def _backward(chunk_size, residuals, grad_pooled):
  images, kernel, bias = residuals
  batch, height, width, _ = images.shape
  if batch % chunk_size:
    raise ValueError(f"conv_pool chunk_size={chunk_size} does not divide the batch of {batch}; "
                     "pick a divisor of the batch size")
  scale = grad_pooled / (height * width)
  taps = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]

  def chunk_grads(carry, chunk):
    x, g = chunk
    padded = jnp.pad(x, ((0, 0), *same_padding(kernel.shape[:2]), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + height, j:j + width]
                               for i in range(kernel.shape[0]) for j in range(kernel.shape[1])],
                              axis=-1).reshape(-1, taps)
    pre = patches @ kernel.reshape(taps, -1) + bias
    d_pre = jnp.where(pre.reshape(chunk_size, -1, pre.shape[-1]) > 0, g[:, None, :], 0)
    d_pre = d_pre.astype(x.dtype).reshape(pre.shape)
    d_kernel, d_bias = carry
    d_kernel = d_kernel + patches.T @ d_pre
    d_bias = d_bias + d_pre.sum(axis=0)
    d_images = jax.vjp(lambda x_: _conv_same(x_, kernel), x)[1](
        d_pre.reshape(*x.shape[:3], -1))[0]
    return (d_kernel, d_bias), d_images

  chunks = (images.reshape(batch // chunk_size, chunk_size, *images.shape[1:]),
            scale.reshape(batch // chunk_size, chunk_size, -1))
  zeros = (jnp.zeros((taps, kernel.shape[-1]), kernel.dtype), jnp.zeros_like(bias))
  (d_kernel, d_bias), d_images = jax.lax.scan(chunk_grads, zeros, chunks)
  return d_images.reshape(images.shape), d_kernel.reshape(kernel.shape), d_bias


conv_relu_mean_pool.defvjp(_forward, _backward)


_IMPLEMENTATIONS = ("auto", "fused", "xla")


class ConvPoolImageEncoder(nn.Module):
  """k_h x k_w convolution (C channels, same padding) -> ReLU -> global average pool: `(B, C)`.

  Parameters: C(k_h·k_w·C_in + 1). `implementation`: "fused" is `conv_relu_mean_pool` with its
  custom VJP (`chunk_size` images at a time in the backward pass; it must divide the per-device
  batch), which pays off on a CPU, where writing the `(B, H, W, C)` activation map costs more than
  the arithmetic; "xla" is the plain composition with XLA's own convolution gradient, which
  accelerators run fastest; "auto" (default) picks "fused" on a CPU backend and "xla" elsewhere.
  Both compute the same function and gradient (tested against autodiff).
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "H", "W", "C")
  channels: int = 64
  kernel_size: Sequence[int] = (3, 3)
  chunk_size: int = 1
  implementation: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, images.shape[-1], self.channels))
    bias = self.param("bias", nn.initializers.zeros, (self.channels,))
    if self.implementation not in _IMPLEMENTATIONS:
      raise ValueError(f"conv_pool implementation must be one of {', '.join(_IMPLEMENTATIONS)}, "
                       f"got {self.implementation!r}")
    fused = (self.implementation == "fused"
             or self.implementation == "auto" and jax.default_backend() == "cpu")
    args = (images.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype))
    pooled = (conv_relu_mean_pool(*args, self.chunk_size) if fused
              else _conv_relu_mean_pool(*args))
    return zero_absent(pooled, mask)


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
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "H", "W", "C")
  stage_channels: Sequence[int] = (32, 64)
  blocks_per_stage: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    x = nn.Conv(self.stage_channels[0], (3, 3), padding="SAME", dtype=self.dtype,
                name="stem")(images.astype(self.dtype))
    for stage, channels in enumerate(self.stage_channels):
      for block in range(self.blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(channels, stride, self.dtype, name=f"stage{stage}_block{block}")(x)
    x = nn.relu(nn.GroupNorm(num_groups=min(8, x.shape[-1]), dtype=self.dtype)(x))
    return zero_absent(x.mean(axis=(1, 2)), mask)


class LeNetEncoder(nn.Module):
  """LeNet-style CNN of the AV-MNIST work (MultiBench's `LeNet(in_channels, channels,
  additional_layers)`, from CentralNet/MFAS): `(B, H, W, C_in)` -> `(B, D)`.

  Layer 0 is a 5x5 conv with c channels, layers 1..L (L = `num_layers`) 3x3 convs doubling them
  (c·2^l); each conv (same padding, no bias) -> norm -> ReLU -> 2x2 max pool (stride 2, flooring
  odd sizes). The output is the final map flattened, c·2^L·h·w with h = ⌊H / 2^(L+1)⌋: MultiBench
  returns the squeezed map, which its AV-MNIST heads read as a vector, since there the map is
  1x1: images 28x28 with c=6, L=3 give 48 features (13,938 parameters); spectrograms 112x112
  with c=6, L=5 give 192 (221,874). `dim` adds a Dense projection of that vector (MultiBench's
  optional `linear`, which there acts on the map's last axis). Convs use He-uniform
  initialisation (PyTorch's `kaiming_uniform_`, as there).
  Parameters: 25·C_in·c + 6c²(4^L − 1) conv weights, plus 2c(2^(L+1) − 1) GroupNorm scales and
  offsets (or c(2^(L+1) − 1) conv biases without norm).

  Deviations from MultiBench: GroupNorm with `norm_groups` groups in place of BatchNorm (no
  mutable batch statistics, as in every mmjax encoder; None: no norm, the convs get biases); a
  map larger than 1x1 is flattened in (h, w, c) order rather than PyTorch's (c, h, w); no
  per-layer outputs (`output_each_layer`).
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "H", "W", "C")
  channels: int = 6
  num_layers: int = 3
  norm_groups: Optional[int] = 2
  dim: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    pools = self.num_layers + 1
    if min(images.shape[1:3]) < 2 ** pools:
      raise ValueError(f"lenet's {pools} 2x2 max pools need images of at least {2 ** pools}x"
                       f"{2 ** pools}, got {images.shape[1]}x{images.shape[2]}; lower num_layers")
    if self.norm_groups and self.channels % self.norm_groups:
      raise ValueError(f"lenet channels={self.channels} is not divisible by "
                       f"norm_groups={self.norm_groups}; pick a divisor")
    x = images.astype(self.dtype)
    for layer in range(pools):
      x = nn.Conv(self.channels * 2 ** layer, (5, 5) if layer == 0 else (3, 3), padding="SAME",
                  use_bias=not self.norm_groups, kernel_init=nn.initializers.he_uniform(),
                  dtype=self.dtype, name=f"conv_{layer}")(x)
      if self.norm_groups:
        x = nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype, name=f"norm_{layer}")(x)
      x = _max_pool_2x2(nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    if self.dim is not None:
      x = nn.Dense(self.dim, dtype=self.dtype, name="projection")(x)
    return zero_absent(x, mask)


_POOLINGS = ("cls", "mean")
_POSITIONS = ("learned", "sinusoidal")


class ViTEncoder(nn.Module):
  """Vision Transformer (Dosovitskiy et al., 2021): `(B, H, W, C)` -> `(B, model_dim)`.

  The image is cut into non-overlapping P x P patches (P = `patch_size`, which must divide H and
  W), taken in row-major order; each is embedded linearly, x_p W + b (a conv with kernel = stride
  = P). `pooling` "cls" prepends a learned token (initialised to zero) whose final state is the
  output; "mean" averages the final states of the patches. Position embeddings over the token
  index (the paper's 1-D ones; the CLS token is position 0) are "learned" (N(0, 0.02²), sized
  by the first image seen) or "sinusoidal" (fixed). Then dropout, pre-LN `TransformerBlock`s
  (GELU MLP) and a final LayerNorm, as in the paper.
  Parameters: P²·C·d + d + [d for CLS] + [T·d learned positions] + L(4d² + 2d·m + 9d + m) + 2d,
  with T = HW/P² (+1 with CLS), d = model_dim, m = mlp_dim.
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "H", "W", "C")
  patch_size: int = 4
  model_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.0
  pooling: str = "cls"
  positions: str = "learned"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    batch, height, width, _ = images.shape
    if height % self.patch_size or width % self.patch_size:
      raise ValueError(f"vit patch_size={self.patch_size} does not divide the {height}x{width} "
                       "image; pick a common divisor of its height and width")
    if self.pooling not in _POOLINGS or self.positions not in _POSITIONS:
      raise ValueError(f"vit pooling must be one of {', '.join(_POOLINGS)} and positions one of "
                       f"{', '.join(_POSITIONS)}; got {self.pooling!r}, {self.positions!r}")
    patch = (self.patch_size, self.patch_size)
    x = nn.Conv(self.model_dim, patch, strides=patch, padding="VALID", dtype=self.dtype,
                name="patch_embedding")(images.astype(self.dtype))
    x = x.reshape(batch, -1, self.model_dim)
    if self.pooling == "cls":
      cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.model_dim))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.model_dim)),
                           x], axis=1)
    shape = x.shape[1:]
    positions = (self.param("position_embedding", nn.initializers.normal(0.02), shape)
                 if self.positions == "learned" else sinusoidal_positions(*shape))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + positions.astype(self.dtype))
    for layer in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.dtype,
                           name=f"block_{layer}")(x, None, train=train)
    x = nn.LayerNorm(dtype=self.dtype)(x)
    return zero_absent(x[:, 0] if self.pooling == "cls" else x.mean(axis=1), mask)
