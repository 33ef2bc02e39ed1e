"""Encoders: the LSTM's recurrence, padding and absent-modality invariance, the conv encoder's math
and exact custom gradient for any kernel size, jit and grad."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pretrained_helpers import TOWER_CASES, tower, tower_inputs

from mmjax.encoders import (ENCODERS, ConvPoolImageEncoder, LeNetEncoder, LSTMSequenceEncoder,
                            SequenceFeaturesEncoder,
                            LSTMTextEncoder, ResNetImageEncoder, TransformerSequenceEncoder,
                            TransformerTextEncoder, ViTEncoder)
from mmjax.encoders.image import _conv_relu_mean_pool, conv_relu_mean_pool

RNG = np.random.default_rng(0)


def numpy_lstm(params, x, num_layers):
  """The textbook LSTM over inputs `(B, T, D)`, one time step at a time, in numpy float64."""
  x = np.asarray(x, np.float64)
  for layer in range(num_layers):
    p = params[f"lstm_{layer}"]
    w_x = np.asarray(p["input_projection"]["kernel"], np.float64)
    b = np.asarray(p["input_projection"]["bias"], np.float64)
    w_h = np.asarray(p["recurrent_kernel"], np.float64)
    hidden = w_h.shape[0]
    h, c = np.zeros((x.shape[0], hidden)), np.zeros((x.shape[0], hidden))
    outputs = []
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    for t in range(x.shape[1]):
      z = x[:, t] @ w_x + b + h @ w_h
      i, f, g, o = np.split(z, 4, axis=-1)
      c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
      h = sigmoid(o) * np.tanh(c)
      outputs.append(h)
    x = np.stack(outputs, axis=1)
  return x


def test_lstm_matches_step_by_step_recurrence_at_each_last_real_token():
  encoder = LSTMTextEncoder(vocab_size=50, embed_dim=8, hidden_dim=16, num_layers=2)
  tokens = RNG.integers(1, 50, (4, 7))
  lengths = np.array([7, 3, 1, 5])
  mask = np.arange(7)[None] < lengths[:, None]
  params = encoder.init(jax.random.key(0), tokens, mask)["params"]
  embedded = np.asarray(params["embedding"]["embedding"])[tokens]
  expected = numpy_lstm(params, embedded, 2)[np.arange(4), lengths - 1]
  got = encoder.apply({"params": params}, tokens, mask)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_lstm_parameter_count_is_embedding_plus_4h_times_d_plus_h_plus_1_per_layer():
  vocab, embed, hidden = 25_000, 100, 256
  encoder = LSTMTextEncoder(vocab_size=vocab, embed_dim=embed, hidden_dim=hidden, num_layers=2)
  params = encoder.init(jax.random.key(0), np.zeros((1, 3), np.int32))
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == vocab * embed + 4 * hidden * (embed + hidden + 1) + 4 * hidden * (2 * hidden + 1)


@pytest.mark.parametrize("encoder", [
    LSTMTextEncoder(vocab_size=30, embed_dim=8, hidden_dim=16, num_layers=2),
    TransformerTextEncoder(vocab_size=30, max_length=16, model_dim=16, num_layers=2, num_heads=2,
                           mlp_dim=32),
], ids=["lstm", "transformer"])
def test_padding_changes_nothing(encoder):
  lengths = np.array([5, 2, 8])
  tokens = RNG.integers(1, 30, (3, 8))
  mask = np.arange(8)[None] < lengths[:, None]
  params = encoder.init(jax.random.key(1), tokens, mask)
  reference = encoder.apply(params, tokens, mask)
  # Other values at padded positions.
  scrambled = np.where(mask, tokens, RNG.integers(0, 30, tokens.shape))
  np.testing.assert_allclose(encoder.apply(params, scrambled, mask), reference, atol=1e-6)
  # More padding on the right.
  longer = np.concatenate([tokens, RNG.integers(0, 30, (3, 4))], axis=1)
  longer_mask = np.concatenate([mask, np.zeros((3, 4), bool)], axis=1)
  np.testing.assert_allclose(encoder.apply(params, longer, longer_mask), reference, atol=1e-5)
  # Each sequence alone, unpadded.
  for b, length in enumerate(lengths):
    alone = encoder.apply(params, tokens[b:b + 1, :length], mask[b:b + 1, :length])
    np.testing.assert_allclose(alone[0], reference[b], atol=1e-5)


def _place(values, lengths, length, pattern, fill):
  """Each example's first `lengths[b]` rows of `values` at the real positions of a `(B, length)`
  mask with padding on the "right", on the "left" (MulT's features) or "scattered" (real steps
  in order at random positions); the padded positions hold `fill`'s values."""
  placed, mask = fill.copy(), np.zeros((len(lengths), length), bool)
  for b, n in enumerate(lengths):
    if pattern == "right":
      where = np.arange(n)
    elif pattern == "left":
      where = np.arange(length - n, length)
    else:
      where = np.sort(RNG.choice(length, n, replace=False))
    mask[b, where] = True
    placed[b, where] = values[b, :n]
  return placed, mask


SEQUENCE_ENCODERS = {
    "lstm": (LSTMTextEncoder(vocab_size=30, embed_dim=8, hidden_dim=16, num_layers=2),
             lambda shape: RNG.integers(1, 30, shape).astype(np.int32)),
    "transformer": (TransformerTextEncoder(vocab_size=30, max_length=16, model_dim=16,
                                           num_layers=2, num_heads=2, mlp_dim=32),
                    lambda shape: RNG.integers(1, 30, shape).astype(np.int32)),
    "sequence_lstm": (LSTMSequenceEncoder(hidden_dim=16, num_layers=2),
                      lambda shape: RNG.normal(size=(*shape, 5)).astype(np.float32)),
    "sequence_transformer": (TransformerSequenceEncoder(max_length=16, model_dim=16, num_heads=2,
                                                       mlp_dim=32),
                             lambda shape: RNG.normal(size=(*shape, 5)).astype(np.float32)),
}


@pytest.mark.parametrize("pattern", ["right", "left", "scattered"])
@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
def test_any_padding_pattern_gives_the_output_of_the_unpadded_sequence(name, pattern):
  """Real steps at any positions (in order), other values at the padded ones: each example's
  output equals that of its real steps alone, with no padding."""
  encoder, make = SEQUENCE_ENCODERS[name]
  lengths, length = np.array([6, 2, 1, 4]), 9
  values = make((4, 6))
  inputs, mask = _place(values, lengths, length, pattern, make((4, length)))
  params = encoder.init(jax.random.key(1), inputs, mask)
  got = jax.jit(encoder.apply)(params, inputs, mask)
  for b, n in enumerate(lengths):
    alone = encoder.apply(params, values[b:b + 1, :n], np.ones((1, n), bool))
    np.testing.assert_allclose(got[b], alone[0], rtol=1e-5, atol=1e-5)


def test_sequence_lstm_is_the_recurrence_over_the_real_steps_of_left_padded_features():
  """MOSI-sized features (T = 50, D = 74) left-padded with zeros, as MulT released them."""
  encoder = LSTMSequenceEncoder(hidden_dim=12, num_layers=2)
  lengths, length = np.array([50, 17, 1]), 50
  values = RNG.normal(size=(3, 50, 74)).astype(np.float32)
  inputs, mask = _place(values, lengths, length, "left", np.zeros_like(values))
  params = encoder.init(jax.random.key(0), inputs, mask)["params"]
  got = encoder.apply({"params": params}, inputs, mask)
  for b, n in enumerate(lengths):
    expected = numpy_lstm(params, values[b:b + 1, :n], 2)[0, -1]
    np.testing.assert_allclose(got[b], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", [LSTMSequenceEncoder(hidden_dim=8),
                                     TransformerSequenceEncoder(model_dim=8, num_heads=2,
                                                                mlp_dim=16)],
                         ids=["sequence_lstm", "sequence_transformer"])
def test_sequence_encoders_take_no_mask_or_a_presence_mask(encoder):
  """No mask: every step is real; a `(B,)` presence mask applies to all steps of an example."""
  features = RNG.normal(size=(3, 5, 35)).astype(np.float32)
  params = encoder.init(jax.random.key(0), features)
  everything = np.asarray(encoder.apply(params, features, np.ones((3, 5), bool)))
  np.testing.assert_allclose(encoder.apply(params, features), everything, atol=1e-6)
  present = np.asarray(encoder.apply(params, features, np.array([True, False, True])))
  np.testing.assert_allclose(present[[0, 2]], everything[[0, 2]], atol=1e-6)
  np.testing.assert_array_equal(present[1], 0.0)


def test_sequence_features_are_the_input_with_padded_steps_and_absent_examples_zeroed():
  """MulT's input: bug caught, the padding's values passed on to the fusion."""
  encoder = SequenceFeaturesEncoder()
  features = RNG.normal(size=(3, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  params = encoder.init(jax.random.key(0), features, mask)
  assert jax.tree.leaves(params) == []
  np.testing.assert_array_equal(encoder.apply(params, features, mask), features * mask[..., None])
  np.testing.assert_array_equal(encoder.apply(params, features), features)
  present = np.asarray(encoder.apply(params, features, np.array([True, False, True])))
  np.testing.assert_array_equal(present[[0, 2]], features[[0, 2]])
  np.testing.assert_array_equal(present[1], 0.0)


def test_sequence_transformer_parameter_count():
  """D_in·d + d + max_length·d + L(4d² + 2d·m + 9d + m) + 2d for MOSI's 300-d text features."""
  d, m, layers, length, d_in = 32, 64, 3, 50, 300
  encoder = TransformerSequenceEncoder(max_length=length, model_dim=d, num_layers=layers,
                                       num_heads=4, mlp_dim=m)
  params = encoder.init(jax.random.key(0), np.zeros((1, 50, d_in), np.float32))
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == d_in * d + d + length * d + layers * (4 * d * d + 2 * d * m + 9 * d + m) + 2 * d


def test_conv_pool_equals_direct_convolution_relu_and_average():
  encoder = ConvPoolImageEncoder(channels=5)
  images = RNG.normal(size=(2, 6, 7, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)["params"]
  kernel = np.asarray(params["kernel"], np.float64)
  bias = np.asarray(params["bias"], np.float64)
  padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  pre = np.zeros((2, 6, 7, 5)) + bias
  for dy in range(3):
    for dx in range(3):
      pre += np.einsum("bhwi,io->bhwo", padded[:, dy:dy + 6, dx:dx + 7], kernel[dy, dx])
  expected = np.maximum(pre, 0).mean(axis=(1, 2))
  np.testing.assert_allclose(encoder.apply({"params": params}, images), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder,inputs", [
    (LSTMTextEncoder(vocab_size=30, embed_dim=8, hidden_dim=16), RNG.integers(0, 30, (2, 5))),
    (TransformerTextEncoder(vocab_size=30, max_length=8, model_dim=16, num_heads=2, mlp_dim=32),
     RNG.integers(0, 30, (2, 5))),
    (ConvPoolImageEncoder(channels=8), RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)),
    (ResNetImageEncoder(stage_channels=(8, 16)), RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)),
    (LeNetEncoder(channels=4, num_layers=2), RNG.normal(size=(2, 12, 12, 1)).astype(np.float32)),
    (ViTEncoder(patch_size=4, model_dim=16, num_heads=2, mlp_dim=32),
     RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)),
    (ViTEncoder(patch_size=4, model_dim=16, num_heads=2, mlp_dim=32, pooling="mean"),
     RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)),
    (LSTMSequenceEncoder(hidden_dim=8, num_layers=2),
     RNG.normal(size=(2, 5, 6)).astype(np.float32)),
    (TransformerSequenceEncoder(max_length=8, model_dim=16, num_heads=2, mlp_dim=32),
     RNG.normal(size=(2, 5, 6)).astype(np.float32)),
], ids=["lstm", "transformer", "conv_pool", "resnet", "lenet", "vit_cls", "vit_mean",
        "sequence_lstm", "sequence_transformer"])
def test_every_parameter_gets_a_finite_nonzero_gradient_under_jit(encoder, inputs):
  params = encoder.init(jax.random.key(0), inputs)
  loss = jax.jit(lambda p: (encoder.apply(p, inputs) ** 2).sum())
  grads = jax.grad(loss)(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(grad)), path
    assert np.any(grad != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_transformer_rejects_sequences_longer_than_its_position_table():
  encoder = TransformerTextEncoder(vocab_size=10, max_length=4, model_dim=8, num_heads=2, mlp_dim=8)
  with pytest.raises(ValueError, match="max_length"):
    encoder.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))


@pytest.mark.parametrize("kernel_size,chunk_size", [((3, 3), 1), ((3, 3), 2), ((3, 3), 4),
                                                    ((1, 1), 2), ((2, 2), 2), ((3, 1), 2),
                                                    ((1, 3), 2), ((5, 5), 2), ((2, 3), 1)])
def test_conv_pool_custom_gradient_equals_autodiff_for_kernel_bias_and_images(kernel_size,
                                                                              chunk_size):
  """Exact for every kernel size, even ones included (SAME pads (k−1)//2 before, k//2 after)."""
  images = jnp.asarray(RNG.normal(size=(4, 6, 5, 3)), jnp.float32)
  kernel = jnp.asarray(RNG.normal(size=(*kernel_size, 3, 7)) * 0.3, jnp.float32)
  bias = jnp.asarray(RNG.normal(size=(7,)) * 0.1, jnp.float32)
  weights = jnp.asarray(RNG.normal(size=(4, 7)), jnp.float32)

  def loss(pool):
    return lambda x, k, b: (pool(x, k, b) * weights).sum() + (pool(x, k, b) ** 2).sum()

  reference = jax.grad(loss(_conv_relu_mean_pool), argnums=(0, 1, 2))(images, kernel, bias)
  fused = jax.jit(jax.grad(loss(lambda x, k, b: conv_relu_mean_pool(x, k, b, chunk_size)),
                           argnums=(0, 1, 2)))(images, kernel, bias)
  for got, expected in zip(fused, reference):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_conv_pool_chunk_size_must_divide_the_batch():
  images = jnp.ones((3, 4, 4, 3))
  kernel, bias = jnp.ones((3, 3, 3, 2)), jnp.zeros(2)
  with pytest.raises(ValueError, match="chunk_size=2 does not divide the batch of 3"):
    jax.grad(lambda k: conv_relu_mean_pool(images, k, bias, 2).sum())(kernel)


def test_conv_pool_encoder_kernel_size_is_configurable():
  encoder = ConvPoolImageEncoder(channels=4, kernel_size=(5, 3))
  images = RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
  params = encoder.init(jax.random.key(0), images)["params"]
  assert params["kernel"].shape == (5, 3, 3, 4)
  np.testing.assert_allclose(encoder.apply({"params": params}, images),
                             _conv_relu_mean_pool(images, params["kernel"], params["bias"]),
                             rtol=1e-5, atol=1e-6)


def _tokens(batch):
  tokens = RNG.integers(1, 30, (batch, 6)).astype(np.int32)
  return tokens, np.arange(6)[None] < np.array([6, 3, 1, 4])[:batch, None]


def _features(batch):
  """Left-padded feature sequences (MulT's layout)."""
  features = RNG.normal(size=(batch, 6, 5)).astype(np.float32)
  return features, np.arange(6)[None] >= 6 - np.array([6, 3, 1, 4])[:batch, None]


# Per registered encoder: a small instance and `(inputs, mask)` of 4 examples. Sequences get a
# `(B, T)` padding mask, everything else a `(B,)` presence mask.
ABSENCE_CASES = {
    "lstm": (LSTMTextEncoder(vocab_size=30, embed_dim=8, hidden_dim=16), lambda: _tokens(4)),
    "transformer": (TransformerTextEncoder(vocab_size=30, max_length=8, model_dim=16, num_heads=2,
                                           mlp_dim=32), lambda: _tokens(4)),
    "conv_pool": (ConvPoolImageEncoder(channels=8),
                  lambda: (RNG.normal(size=(4, 8, 8, 3)).astype(np.float32), np.ones(4, bool))),
    "resnet": (ResNetImageEncoder(stage_channels=(8, 16)),
               lambda: (RNG.normal(size=(4, 8, 8, 3)).astype(np.float32), np.ones(4, bool))),
    "lenet": (LeNetEncoder(channels=4, num_layers=1),
              lambda: (RNG.normal(size=(4, 8, 8, 1)).astype(np.float32), np.ones(4, bool))),
    "vit": (ViTEncoder(patch_size=4, model_dim=16, num_heads=2, mlp_dim=32),
            lambda: (RNG.normal(size=(4, 8, 8, 3)).astype(np.float32), np.ones(4, bool))),
    "sequence_lstm": (LSTMSequenceEncoder(hidden_dim=8), lambda: _features(4)),
    "sequence_transformer": (TransformerSequenceEncoder(max_length=8, model_dim=16, num_heads=2,
                                                        mlp_dim=32), lambda: _features(4)),
    "sequence_features": (SequenceFeaturesEncoder(), lambda: _features(4)),
    "mlp": (ENCODERS["mlp"](hidden_dims=(8,), dim=6),
            lambda: (RNG.normal(size=(4, 8)).astype(np.float32), np.ones(4, bool))),
    "feature_tokens": (ENCODERS["feature_tokens"](num_tokens=2, model_dim=6),
                       lambda: (RNG.normal(size=(4, 8)).astype(np.float32), np.ones(4, bool))),
    **{name: (tower(name), functools.partial(tower_inputs, name, 4, RNG))
       for name in TOWER_CASES},
}


def test_every_registered_encoder_has_an_absence_case():
  assert set(ABSENCE_CASES) == set(ENCODERS), "add the new encoder to ABSENCE_CASES"


@pytest.mark.parametrize("name", sorted(ABSENCE_CASES))
def test_absent_example_encodes_to_zeros_whatever_its_padded_values(name):
  """Example 0 has an all-False mask (an absent modality): its output is zero and finite and does
  not move when its values change; the other examples are untouched."""
  encoder, make = ABSENCE_CASES[name]
  inputs, mask = make()
  mask = mask.copy()
  mask[0] = False
  params = encoder.init(jax.random.key(0), inputs, mask)
  apply = jax.jit(encoder.apply)
  reference = np.asarray(apply(params, inputs, mask))
  other, _ = make()
  scrambled = inputs.copy()
  scrambled[0] = other[0] if inputs.dtype != np.int32 else (inputs[0] + 7) % 30
  np.testing.assert_array_equal(apply(params, scrambled, mask), reference)
  np.testing.assert_array_equal(reference[0], 0.0)
  assert np.all(np.isfinite(reference)) and np.any(reference[1:] != 0)


def test_conv_pool_implementations_compute_the_same_function_and_gradient():
  """"fused" (custom VJP, the CPU default) and "xla" (XLA's gradient, the accelerator default)."""
  images = RNG.normal(size=(4, 8, 8, 3)).astype(np.float32)
  fused, xla = (ConvPoolImageEncoder(channels=6, chunk_size=2, implementation=name)
                for name in ("fused", "xla"))
  params = fused.init(jax.random.key(0), images)
  loss = lambda module: jax.jit(jax.value_and_grad(
      lambda p, x: (module.apply(p, x) ** 2).sum(), argnums=(0, 1)))(params, images)
  (value_f, grads_f), (value_x, grads_x) = loss(fused), loss(xla)
  np.testing.assert_allclose(value_f, value_x, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_x)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  traced = lambda module: str(jax.make_jaxpr(lambda p: module.apply(p, images))(params))
  assert "custom_vjp" in traced(ConvPoolImageEncoder(channels=6))      # auto on this CPU: fused
  assert "custom_vjp" not in traced(xla)


@pytest.mark.parametrize("name", ["lenet", "vit", "sequence_lstm", "sequence_transformer"])
def test_dtype_is_the_compute_dtype_and_parameters_stay_float32(name):
  encoder, make = ABSENCE_CASES[name]
  encoder = encoder.clone(dtype=jnp.bfloat16)
  inputs, mask = make()
  params = encoder.init(jax.random.key(0), inputs, mask)
  assert encoder.apply(params, inputs, mask).dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
