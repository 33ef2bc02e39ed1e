"""The LeNet and ViT image encoders: numpy references of their math, MultiBench's AV-MNIST shapes
and parameter counts, the patch order against the position embeddings, and the one-line errors."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax.encoders import LeNetEncoder, ViTEncoder
from mmjax.encoders import image as image_encoders
from mmjax.layers.transformer import sinusoidal_positions

RNG = np.random.default_rng(0)


def count(params):
  return sum(x.size for x in jax.tree.leaves(params))


def perturbed(params):
  """Random values for every parameter, so that zero biases or unit scales hide nothing."""
  return jax.tree.map(lambda x: np.asarray(RNG.normal(size=x.shape) * 0.5, np.float32), params)


def numpy_conv_same(x, kernel):
  """Stride-1 convolution with zero padding k // 2 on each side (odd k)."""
  k, height, width = kernel.shape[0], x.shape[1], x.shape[2]
  padded = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  return sum(np.einsum("bhwi,io->bhwo", padded[:, dy:dy + height, dx:dx + width], kernel[dy, dx])
             for dy in range(k) for dx in range(k))


def numpy_group_norm(x, groups, scale, bias, eps=1e-6):
  grouped = x.reshape(*x.shape[:3], groups, -1)
  mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
  var = grouped.var(axis=(1, 2, 4), keepdims=True)
  return ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def numpy_max_pool(x):
  """2x2, stride 2, dropping an odd last row or column (PyTorch's floor mode)."""
  b, height, width, c = x.shape
  h, w = height // 2, width // 2
  return x[:, :2 * h, :2 * w].reshape(b, h, 2, w, 2, c).max(axis=(2, 4))


def numpy_lenet(params, images, num_layers, norm_groups):
  x = images.astype(np.float64)
  for layer in range(num_layers + 1):
    conv = params[f"conv_{layer}"]
    x = numpy_conv_same(x, np.asarray(conv["kernel"], np.float64))
    if norm_groups:
      norm = params[f"norm_{layer}"]
      x = numpy_group_norm(x, norm_groups, np.asarray(norm["scale"]), np.asarray(norm["bias"]))
    else:
      x = x + np.asarray(conv["bias"])
    x = numpy_max_pool(np.maximum(x, 0))
  return x.reshape(len(x), -1)


@pytest.mark.parametrize("norm_groups", [2, None])
def test_lenet_is_conv_norm_relu_max_pool_with_doubling_channels_then_flatten(norm_groups):
  """18x13 input, two doublings: 18 -> 9 -> 4 -> 2 and 13 -> 6 -> 3 -> 1 (odd sizes floor), a
  2x1 map of 16 channels flattened to 32 features."""
  encoder = LeNetEncoder(channels=4, num_layers=2, norm_groups=norm_groups)
  images = RNG.normal(size=(3, 18, 13, 2)).astype(np.float32)
  params = perturbed(encoder.init(jax.random.key(0), images)["params"])
  assert [params[f"conv_{l}"]["kernel"].shape for l in range(3)] == [
      (5, 5, 2, 4), (3, 3, 4, 8), (3, 3, 8, 16)]
  got = encoder.apply({"params": params}, images)
  assert got.shape == (3, 2 * 1 * 16)
  np.testing.assert_allclose(got, numpy_lenet(params, images, 2, norm_groups),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm_groups", [2, None])
def test_lenet_gradients_equal_those_of_flax_max_pool(monkeypatch, norm_groups):
  """The reshape-and-max pool has nn.max_pool's gradient (to the parameters and the images) on
  odd sizes too: ties are only among ReLU zeros, whose gradient is zero either way."""
  encoder = LeNetEncoder(channels=4, num_layers=2, norm_groups=norm_groups)
  images = RNG.normal(size=(3, 18, 13, 2)).astype(np.float32)
  params = perturbed(encoder.init(jax.random.key(0), images)["params"])
  weights = RNG.normal(size=(3, 32)).astype(np.float32)

  def gradients():
    loss = lambda p, x: (encoder.apply({"params": p}, x) * weights).sum()
    return jax.grad(loss, argnums=(0, 1))(params, images)

  ours = gradients()
  monkeypatch.setattr(image_encoders, "_max_pool_2x2",
                      lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))
  flax_pool = gradients()
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(flax_pool)) > 0.1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               ours, flax_pool)


@pytest.mark.parametrize("side,num_layers,features,parameters", [(28, 3, 48, 13_938),
                                                                 (112, 5, 192, 221_874)],
                         ids=["image", "spectrogram"])
def test_lenet_av_mnist_shapes_and_parameter_counts(side, num_layers, features, parameters):
  """MultiBench's AV-MNIST encoders: LeNet(1, 6, 3) on 28x28 digits and LeNet(1, 6, 5) on 112x112
  spectrograms end on 1x1 maps of 48 and 192 channels (its late-fusion head reads 6·40 = 240);
  25·C_in·c + 6c²(4^L − 1) conv weights + 2c(2^(L+1) − 1) norm terms (BatchNorm's count too)."""
  encoder = LeNetEncoder(channels=6, num_layers=num_layers)
  images = RNG.normal(size=(2, side, side, 1)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  assert encoder.apply(params, images).shape == (2, features)
  c, layers = 6, num_layers
  assert count(params) == parameters == (25 * c + 6 * c * c * (4 ** layers - 1)
                                         + 2 * c * (2 ** (layers + 1) - 1))


def test_lenet_without_norm_has_conv_biases_and_dim_projects_the_flat_map():
  encoder = LeNetEncoder(channels=4, num_layers=2, norm_groups=None, dim=10)
  images = RNG.normal(size=(2, 16, 16, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  assert encoder.apply(params, images).shape == (2, 10)
  flat = 16 * 2 * 2
  assert count(params) == 25 * 3 * 4 + 6 * 16 * (4 ** 2 - 1) + 4 * 7 + flat * 10 + 10


def test_lenet_convs_use_he_uniform_initialisation():
  """PyTorch's kaiming_uniform_ as in MultiBench: U(±√(6 / fan_in)), variance 2 / fan_in."""
  encoder = LeNetEncoder(channels=6, num_layers=5)
  params = encoder.init(jax.random.key(0), np.zeros((1, 112, 112, 1), np.float32))["params"]
  kernel = np.asarray(params["conv_5"]["kernel"])
  fan_in = 3 * 3 * 96
  assert np.abs(kernel).max() <= np.sqrt(6 / fan_in)
  np.testing.assert_allclose(kernel.var(), 2 / fan_in, rtol=0.02)


def test_lenet_one_line_errors():
  with pytest.raises(ValueError, match="need images of at least 16x16, got 28x12"):
    LeNetEncoder(num_layers=3).init(jax.random.key(0), np.zeros((1, 28, 12, 1)))
  with pytest.raises(ValueError, match="channels=6 is not divisible by norm_groups=4"):
    LeNetEncoder(norm_groups=4).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))


def patches(images, p):
  """`(B, H, W, C)` -> `(B, N, P·P·C)`, patches in row-major order, each flattened (row, col, c)."""
  b, height, width, c = images.shape
  grid = images.reshape(b, height // p, p, width // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return grid.reshape(b, -1, p * p * c)


def unpatch(tokens, p, height, width):
  b, _, _ = tokens.shape
  grid = tokens.reshape(b, height // p, width // p, p, p, -1).transpose(0, 1, 3, 2, 4, 5)
  return grid.reshape(b, height, width, -1)


def numpy_layer_norm(x, scale, bias, eps=1e-6):
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * scale + bias


VIT = dict(model_dim=16, num_heads=2, mlp_dim=32)


@pytest.mark.parametrize("shape,patch_size", [((2, 28, 28, 1), 7), ((2, 32, 32, 3), 4),
                                              ((2, 112, 112, 1), 16)],
                         ids=["mnist", "cifar", "spectrogram"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_shapes_and_parameter_count(shape, patch_size, pooling):
  """P²·C·d + d + [d CLS] + T·d + L(4d² + 2d·m + 9d + m) + 2d."""
  encoder = ViTEncoder(patch_size=patch_size, pooling=pooling, **VIT)
  images = RNG.normal(size=shape).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  assert encoder.apply(params, images).shape == (2, 16)
  d, m, layers, channels = 16, 32, 2, shape[-1]
  tokens = shape[1] * shape[2] // patch_size ** 2 + (pooling == "cls")
  assert count(params) == (patch_size ** 2 * channels * d + d + (pooling == "cls") * d
                           + tokens * d + layers * (4 * d * d + 2 * d * m + 9 * d + m) + 2 * d)


def test_vit_patch_embedding_is_a_matmul_of_the_flattened_patches():
  encoder = ViTEncoder(patch_size=4, **VIT)
  images = RNG.normal(size=(2, 12, 8, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  _, state = encoder.apply(params, images, capture_intermediates=True)
  embedded = np.asarray(state["intermediates"]["patch_embedding"]["__call__"][0])
  conv = params["params"]["patch_embedding"]
  expected = patches(images, 4) @ np.asarray(conv["kernel"]).reshape(48, 16) + conv["bias"]
  np.testing.assert_allclose(embedded.reshape(2, 6, 16), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_without_blocks_pools_layer_normed_patch_embeddings_plus_positions(pooling, positions):
  """With no transformer block the encoder is LN(token + position) pooled, so the patch order
  (row-major) must agree with the position embeddings' and the CLS token's."""
  encoder = ViTEncoder(patch_size=4, num_layers=0, pooling=pooling, positions=positions, **VIT)
  images = RNG.normal(size=(3, 8, 12, 2)).astype(np.float32)
  params = perturbed(encoder.init(jax.random.key(0), images)["params"])
  conv, norm = params["patch_embedding"], params["LayerNorm_0"]
  tokens = patches(images, 4) @ conv["kernel"].reshape(32, 16) + conv["bias"]
  if pooling == "cls":
    tokens = np.concatenate([np.broadcast_to(params["cls_token"], (3, 1, 16)), tokens], axis=1)
  table = (params["position_embedding"] if positions == "learned"
           else sinusoidal_positions(tokens.shape[1], 16))
  normed = numpy_layer_norm(tokens + table, norm["scale"], norm["bias"])
  expected = normed[:, 0] if pooling == "cls" else normed.mean(axis=1)
  np.testing.assert_allclose(encoder.apply({"params": params}, images), expected,
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_is_invariant_to_permuting_patches_only_without_position_embeddings(pooling):
  """Attention and both poolings are symmetric in the patches: with zero position embeddings a
  permutation of the patches changes nothing; the learned positions make it matter."""
  encoder = ViTEncoder(patch_size=4, pooling=pooling, **VIT)
  images = RNG.normal(size=(2, 16, 12, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  shuffled = unpatch(patches(images, 4)[:, RNG.permutation(12)], 4, 16, 12)
  apply = jax.jit(encoder.apply)
  assert not np.allclose(apply(params, shuffled), apply(params, images), atol=1e-4)
  table = params["params"]["position_embedding"]
  flat = {"params": {**params["params"], "position_embedding": np.zeros_like(table)}}
  np.testing.assert_allclose(apply(flat, shuffled), apply(flat, images), rtol=1e-5, atol=1e-5)


def test_vit_dropout_after_the_position_embeddings_acts_only_in_training():
  """No transformer block, so only the dropout on patch + position embeddings can act."""
  encoder = ViTEncoder(patch_size=4, num_layers=0, dropout_rate=0.5, pooling="mean", **VIT)
  images = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)
  evaluation = encoder.apply(params, images)
  np.testing.assert_array_equal(encoder.apply(params, images), evaluation)
  training = encoder.apply(params, images, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(training, evaluation)


def test_vit_one_line_errors():
  with pytest.raises(ValueError, match="patch_size=5 does not divide the 28x28 image"):
    ViTEncoder(patch_size=5, **VIT).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match="pooling must be one of cls, mean"):
    ViTEncoder(pooling="max", **VIT).init(jax.random.key(0), np.zeros((1, 8, 8, 1)))
