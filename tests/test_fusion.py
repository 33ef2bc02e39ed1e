"""Fusion zoo: each method's identity (low-rank = CP-factored tensor fusion, tensor fusion's terms,
GMU and FiLM equations), parameter-count formulas, additivity vs interaction (mixed second
derivatives), MBT's late-fusion limit, padding invariance, jit/vmap/grad/bfloat16, the registry."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import registry
from mmjax.fusion import (FUSIONS, FiLMFusion, GatedMultimodalUnit, LowRankFusion, MFBFusion,
                          MultiplicativeFusion, TensorFusion)
from mmjax.model import model_from_config

DIMS = {"audio": 3, "image": 5, "text": 4}          # sorted order: audio, image, text
LENGTHS = {"audio": 5, "image": 2, "text": 4}       # unaligned sequences for mult / mbt
TWO_MODALITIES = {"multiplicative", "mfb"}
SEQUENCE = {"mult", "mbt"}
SMALL = {
    "concat": {}, "tensor": {}, "film": {},
    "late": {"output_dim": 4},
    "sum": {"dim": 6}, "mean": {"dim": 6}, "max": {"dim": 6}, "product": {"dim": 6},
    "gmu": {"dim": 6},
    "attention": {"dim": 6, "attention_dim": 5},
    "low_rank": {"dim": 6, "rank": 3},
    "multiplicative": {"dim": 6},
    "mfb": {"output_dim": 4, "factor": 3},
    "mult": {"model_dim": 8, "num_heads": 2, "num_layers": 1, "self_layers": 1, "mlp_ratio": 1},
    "mbt": {"model_dim": 8, "num_heads": 2, "num_layers": 2, "fusion_layer": 0,
            "num_bottlenecks": 2, "mlp_ratio": 1},
}
assert set(SMALL) == set(FUSIONS)


def small(name, **overrides):
  return FUSIONS[name](**{**SMALL[name], **overrides})


@pytest.fixture(autouse=True, scope="module")
def fast_compilation():
  """These tiny programs are compile-bound (most of all the transformers' gradients): trade XLA's
  optimisation passes for compile time in this module only."""
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def make_inputs(name, batch=3, seed=0, leading=(), modalities=None):
  """Random `({m: (*leading, B, D_m) or (*leading, B, T_m, D_m)}, masks or None)` for fusion `name`;
  three modalities, except two for the bilinear fusions and (for compile time) the sequence ones."""
  rng = np.random.default_rng(seed)
  names = modalities or (["audio", "text"] if name in TWO_MODALITIES | SEQUENCE else sorted(DIMS))
  if name not in SEQUENCE:
    return {m: rng.normal(size=(*leading, batch, DIMS[m])).astype(np.float32) for m in names}, None
  features = {m: rng.normal(size=(*leading, batch, LENGTHS[m], DIMS[m])).astype(np.float32)
              for m in names}
  lengths = {m: rng.integers(1, LENGTHS[m] + 1, (*leading, batch)) for m in names}
  masks = {m: np.arange(LENGTHS[m]) < lengths[m][..., None] for m in names}
  return features, masks


def random_variables(module, features, masks=None, seed=0):
  """Variables of `module.init`'s structure, filled with N(0, 1/fan_in) (N(0, 1/4) for vectors):
  random non-degenerate parameters without compiling the initialisers."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), features, masks)
  rng = np.random.default_rng(seed)
  scale = lambda shape: 0.5 if len(shape) < 2 else 1 / np.sqrt(np.prod(shape[:-1]))
  return jax.tree.map(lambda x: (scale(x.shape) * rng.normal(size=x.shape)).astype(x.dtype), shapes)


@functools.lru_cache(maxsize=None)
def jitted_apply(name, dtype=jnp.float32):
  """One compiled forward per (fusion, dtype) of `small(name)`, shared by the tests that call it on
  the same shapes (`make_inputs(name, batch=2)`): compiling the transformers is what takes time."""
  return jax.jit(small(name, dtype=dtype).apply)


def param_count(module, features):
  shapes = jax.eval_shape(module.init, jax.random.key(0), features)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


# --- identities ------------------------------------------------------------------------------

@pytest.mark.parametrize("rank_weights", [True, False])
def test_low_rank_fusion_equals_tensor_fusion_then_linear_map_with_cp_weight(rank_weights):
  """h = vec(⊗_m [z_m; 1])ᵀ W + b,  W = Σ_i λ_i W_a^(i) ⊗ W_i^(i) ⊗ W_t^(i)."""
  features, _ = make_inputs("low_rank")
  module = LowRankFusion(dim=6, rank=3, rank_weights=rank_weights)
  params = random_variables(module, features)["params"]
  weights = params["rank_weights"] if rank_weights else np.ones(3, np.float32)
  w = np.einsum("r,rad,rbd,rcd->abcd", weights, params["audio_factor"], params["image_factor"],
                params["text_factor"])
  tensor = TensorFusion().apply({}, features)
  expected = np.asarray(tensor) @ w.reshape(-1, 6) + params["bias"]
  np.testing.assert_allclose(module.apply({"params": params}, features), expected,
                             rtol=1e-4, atol=1e-5)


def test_tensor_fusion_holds_every_product_term_and_the_constant_at_row_major_indices():
  """h[i_a·S_a + i_i·S_i + i_t] = v_a[i_a]·v_i[i_i]·v_t[i_t], v = [z; 1], S_a = 6·5, S_i = 5."""
  features, _ = make_inputs("tensor", batch=2)
  a, i, t = (features[m] for m in ("audio", "image", "text"))
  h = np.asarray(TensorFusion().apply({}, features))
  assert h.shape == (2, 4 * 6 * 5)
  index = lambda i_a, i_i, i_t: i_a * 30 + i_i * 5 + i_t
  np.testing.assert_array_equal(h[:, index(3, 5, 4)], 1.0)                       # constant, last
  np.testing.assert_allclose(h[:, index(3, 2, 4)], i[:, 2], rtol=1e-6)          # unimodal z_i[2]
  np.testing.assert_allclose(h[:, index(1, 5, 3)], a[:, 1] * t[:, 3], rtol=1e-6)  # bimodal
  np.testing.assert_allclose(h[:, index(2, 4, 0)], a[:, 2] * i[:, 4] * t[:, 0], rtol=1e-6)
  v = [np.concatenate([z, np.ones((2, 1), np.float32)], axis=1) for z in (a, i, t)]
  for i_a, i_i, i_t in itertools.product(range(4), range(6), range(5)):
    np.testing.assert_allclose(h[:, index(i_a, i_i, i_t)],
                               v[0][:, i_a] * v[1][:, i_i] * v[2][:, i_t], rtol=1e-6)


def test_gmu_with_two_modalities_is_the_papers_sigmoid_gate():
  """h = g ⊙ tanh(W_a z_a) + (1 − g) ⊙ tanh(W_t z_t),  g = σ(W_g [z_a; z_t])."""
  features, _ = make_inputs("multiplicative")
  module = GatedMultimodalUnit(dim=6, use_bias=False)
  p = random_variables(module, features)["params"]
  za, zt = features["audio"], features["text"]
  h_a, h_t = np.tanh(za @ p["audio_hidden"]["kernel"]), np.tanh(zt @ p["text_hidden"]["kernel"])
  g = 1 / (1 + np.exp(-np.concatenate([za, zt], axis=1) @ p["gate"]["kernel"]))
  np.testing.assert_allclose(module.apply({"params": p}, features), g * h_a + (1 - g) * h_t,
                             rtol=1e-5, atol=1e-6)


def test_gmu_gates_over_many_modalities_sum_to_one():
  """With all hidden vectors equal to tanh(c), h = Σ_m g_m tanh(c) = tanh(c)."""
  features, _ = make_inputs("gmu")
  module = GatedMultimodalUnit(dim=6)
  p = random_variables(module, features)["params"]
  for m in DIMS:
    p[m + "_hidden"] = {"kernel": np.zeros((DIMS[m], 6), np.float32),
                        "bias": np.linspace(-1, 1, 6).astype(np.float32)}
  np.testing.assert_allclose(module.apply({"params": p}, features),
                             np.broadcast_to(np.tanh(np.linspace(-1, 1, 6)), (3, 6)), rtol=1e-5)


def test_film_is_an_affine_modulation_of_the_conditioned_modality():
  """h = γ(c) ⊙ z_image + β(c),  c = [z_audio; z_text]."""
  features, _ = make_inputs("film")
  module = FiLMFusion(conditioned="image")
  p = random_variables(module, features)["params"]
  c = np.concatenate([features["audio"], features["text"]], axis=1)
  gamma = c @ p["gamma"]["kernel"] + p["gamma"]["bias"]
  beta = c @ p["beta"]["kernel"] + p["beta"]["bias"]
  np.testing.assert_allclose(module.apply({"params": p}, features),
                             gamma * features["image"] + beta, rtol=1e-5, atol=1e-6)


def test_mfb_is_sum_pooled_product_then_power_and_l2_normalised():
  """s_j = Σ_t e_{jk+t},  h ≈ sign(s)√|s| / ‖sign(s)√|s|‖ (up to ε = 1e-6)."""
  features, _ = make_inputs("mfb")
  module = MFBFusion(output_dim=4, factor=3)
  p = random_variables(module, features)["params"]
  proj = lambda m: features[m] @ p[m + "_projection"]["kernel"] + p[m + "_projection"]["bias"]
  s = (proj("audio") * proj("text")).reshape(3, 4, 3).sum(axis=-1)
  power = np.sign(s) * np.sqrt(np.abs(s))
  expected = power / np.linalg.norm(power, axis=1, keepdims=True)
  got = module.apply({"params": p}, features)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("module", [MultiplicativeFusion(), MFBFusion()],
                         ids=["multiplicative", "mfb"])
def test_bilinear_fusions_reject_other_than_two_modalities(module):
  features, _ = make_inputs("sum")
  with pytest.raises(ValueError, match="exactly 2 modalities"):
    module.init(jax.random.key(0), features)


# --- parameter counts ------------------------------------------------------------------------

_M3, _M2 = sorted(DIMS), ["audio", "text"]
_S3 = sum(DIMS.values())                       # Σ_m D_m = 12
_P3 = sum(d + 1 for d in DIMS.values())         # Σ_m (D_m + 1) = 15
D1, D2 = DIMS["audio"], DIMS["text"]
PARAMETER_COUNTS = {   # case: (fusion, kwargs, modalities, documented formula)
    "late": ("late", {"output_dim": 4}, _M3, 4 * _P3),
    "late_learned": ("late", {"output_dim": 4, "mixing": "learned"}, _M3, 4 * _P3 + 3),
    "sum": ("sum", {"dim": 6}, _M3, 6 * _P3),
    "max": ("max", {"dim": 6}, _M3, 6 * _P3),
    "product": ("product", {"dim": 6}, _M3, 6 * _P3),
    "gmu": ("gmu", {"dim": 6}, _M3, 6 * _P3 + 3 * 6 * (_S3 + 1)),
    "gmu_no_bias": ("gmu", {"dim": 6, "use_bias": False}, _M3, 6 * _S3 + 3 * 6 * _S3),
    "gmu_two": ("gmu", {"dim": 6}, _M2, 6 * (D1 + 1 + D2 + 1) + 6 * (D1 + D2 + 1)),
    "attention": ("attention", {"dim": 6, "attention_dim": 5}, _M3, 6 * _P3 + 5 * (6 + 1) + 5),
    "film": ("film", {"conditioned": "image"}, _M3,
             2 * DIMS["image"] * (DIMS["audio"] + DIMS["text"] + 1)),
    "tensor": ("tensor", {}, _M3, 0),
    "low_rank": ("low_rank", {"dim": 6, "rank": 3}, _M3, 3 * 6 * _P3 + 6 + 3),
    "low_rank_no_weights": ("low_rank", {"dim": 6, "rank": 3, "rank_weights": False}, _M3,
                            3 * 6 * _P3 + 6),
    "multiplicative": ("multiplicative", {"dim": 6}, _M2, (D1 + 1) * (D2 + 1) * 6),
    "mfb": ("mfb", {"output_dim": 4, "factor": 3}, _M2, 3 * 4 * (D1 + 1) + 3 * 4 * (D2 + 1)),
    # d = 8, L = 2, f = 2d, n_b = 3: projections + final norms, M·L pre-LN blocks, bottlenecks
    "mbt": ("mbt", {"model_dim": 8, "num_heads": 2, "num_layers": 2, "fusion_layer": 1,
                    "num_bottlenecks": 3, "mlp_ratio": 2}, _M2,
            sum(8 * (d + 1) + 2 * 8 for d in (D1, D2))
            + 2 * 2 * (4 * 8 * (8 + 1) + 2 * 8 * 16 + 16 + 8 + 4 * 8) + 3 * 8),
}


@pytest.mark.parametrize("case", sorted(PARAMETER_COUNTS))
def test_parameter_count_equals_documented_formula(case):
  name, kwargs, modalities, expected = PARAMETER_COUNTS[case]
  features = {m: np.zeros((2, DIMS[m]), np.float32) for m in modalities}
  assert param_count(FUSIONS[name](**kwargs), features) == expected


# --- gradients, additivity, interactions -----------------------------------------------------

F32, BF16 = jnp.float32, jnp.bfloat16
GRADIENT_CASES = [(n, {}, dtype) for n in sorted(FUSIONS) for dtype in (F32, BF16)] + [
    ("late", {"mixing": "learned"}, F32), ("gmu", {"use_bias": False}, F32)]


@pytest.mark.parametrize("name,overrides,dtype", GRADIENT_CASES,
                         ids=[n + "".join(f"-{k}={v}" for k, v in o.items()) + f"-{d.dtype.name}"
                              for n, o, d in GRADIENT_CASES])
def test_every_parameter_receives_a_finite_nonzero_gradient_under_jit(name, overrides, dtype):
  module = small(name, **overrides, dtype=dtype)
  features, masks = make_inputs(name, batch=4)
  variables = random_variables(module, features, masks)
  out_shape = jax.eval_shape(module.apply, variables, features, masks).shape
  cotangent = np.random.default_rng(2).normal(size=out_shape).astype(np.float32)
  loss = lambda v, f: jnp.sum(module.apply(v, f, masks).astype(jnp.float32) * cotangent)
  grads, input_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, features)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert [jax.tree_util.keystr(path) for path, g in leaves if not np.any(np.asarray(g) != 0)] == []
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves((grads, input_grads)))


def mixed_second_derivative(name):
  """∂²y/∂z_audio ∂z_text of y = rᵀ fusion(z) for one example: `(D_audio, D_text)`."""
  module = small(name)
  features, _ = make_inputs("mfb", batch=1)
  variables = random_variables(module, features)
  r = np.random.default_rng(3).normal(
      size=jax.eval_shape(module.apply, variables, features).shape).astype(np.float32)
  y = lambda za, zt: jnp.sum(r * module.apply(variables, {"audio": za, "text": zt}))
  return np.asarray(jax.jit(jax.jacfwd(jax.jacrev(y, argnums=0), argnums=1))(
      features["audio"], features["text"]))[0, :, 0, :]


@pytest.mark.parametrize("name", ["concat", "late", "sum", "mean"])
def test_additive_fusion_then_linear_map_has_zero_mixed_second_derivative(name):
  np.testing.assert_array_equal(mixed_second_derivative(name), 0.0)


@pytest.mark.parametrize("name", ["tensor", "low_rank", "product", "multiplicative", "mfb", "gmu",
                                  "attention", "film"])
def test_interaction_fusion_has_nonzero_mixed_second_derivative(name):
  assert np.abs(mixed_second_derivative(name)).max() > 1e-3


@pytest.mark.parametrize("num_layers,fusion_layer,is_late", [(1, 1, True), (1, 0, True),
                                                              (2, 0, False)])
def test_mbt_is_late_fusion_unless_two_bottleneck_layers_run(num_layers, fusion_layer, is_late):
  """∂ pooled_audio / ∂ z_text ≡ 0 for fusion_layer = num_layers (no bottleneck) and also for
  fusion_layer = num_layers − 1 (the bottleneck is written once but never read again); non-zero
  once a later layer reads what an earlier one wrote."""
  module = small("mbt", num_layers=num_layers, fusion_layer=fusion_layer, combine="concat")
  features, masks = make_inputs("mbt", batch=2)
  variables = random_variables(module, features, masks)
  width = SMALL["mbt"]["model_dim"]
  audio_block = lambda zt: module.apply(variables, {**features, "text": zt}, masks)[:, :width]
  jacobian = np.asarray(jax.jit(jax.jacrev(audio_block))(features["text"]))
  if is_late:
    np.testing.assert_array_equal(jacobian, 0.0)
  else:
    assert np.abs(jacobian).max() > 1e-6


# --- transformations, dtypes, masks ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_output_is_finite_under_jit_and_vmap_matches_per_slice_calls(name, dtype):
  """jit in float32 and bfloat16 (output in the compute dtype); vmap over an extra leading axis."""
  module = small(name, dtype=dtype)
  features, masks = make_inputs(name, batch=2)
  variables = random_variables(module, features, masks)
  apply = jitted_apply(name, dtype)
  out = apply(variables, features, masks)
  assert out.dtype == dtype and out.ndim == 2 and out.shape[0] == 2
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  if dtype != F32:
    return                                  # vmap does not depend on the dtype; spare the compile

  stacked, stacked_masks = make_inputs(name, batch=2, seed=1, leading=(2,))
  batched = jax.jit(jax.vmap(module.apply, in_axes=(None, 0, 0)))(variables, stacked, stacked_masks)
  second = jax.tree.map(lambda x: x[1], (stacked, stacked_masks))
  np.testing.assert_allclose(batched[1], apply(variables, *second), rtol=1e-5, atol=1e-5)


SEQUENCE_CASES = [("mult", {}), ("mult", {"pooling": "last"}), ("mbt", {}),
                  ("mbt", {"pooling": "cls", "fusion_layer": 1, "combine": "concat"})]


@pytest.mark.parametrize("name,overrides", SEQUENCE_CASES,
                         ids=[n + "".join(f"-{k}={v}" for k, v in o.items())
                              for n, o in SEQUENCE_CASES])
def test_sequence_fusion_output_ignores_padded_token_values(name, overrides):
  module = small(name, **overrides)
  features, masks = make_inputs(name, batch=2)
  assert features["audio"].shape[1] != features["text"].shape[1]   # unaligned lengths
  variables = random_variables(module, features, masks)
  noise = np.random.default_rng(4)
  scrambled = {m: np.where(masks[m][..., None], x, 100 * noise.normal(size=x.shape))
               for m, x in features.items()}
  scrambled = {m: x.astype(np.float32) for m, x in scrambled.items()}
  assert all(not np.allclose(scrambled[m], features[m]) for m in features)   # both have padding
  apply = jax.jit(module.apply) if overrides else jitted_apply(name)
  np.testing.assert_allclose(apply(variables, scrambled, masks), apply(variables, features, masks),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SEQUENCE))
def test_sequence_fusion_treats_vectors_as_length_one_sequences_and_ignores_their_masks(name):
  """What `MultimodalModel` passes: `(B, D)` features next to the encoders' `(B, T)` input masks
  (three modalities here, so MulT concatenates two cross-modal streams per target)."""
  features, _ = make_inputs("sum", batch=2)
  masks = {"text": np.array([[True, True, False], [True, False, False]])}
  module = small(name)
  variables = random_variables(module, features, masks)
  with_masks, without = jax.jit(lambda v: (module.apply(v, features, masks),
                                           module.apply(v, features, None)))(variables)
  assert with_masks.shape[0] == 2
  np.testing.assert_allclose(with_masks, without, rtol=1e-6)


# --- registry and model ----------------------------------------------------------------------

def test_unknown_fusion_name_error_lists_every_valid_name():
  with pytest.raises(ValueError) as error:
    registry.build(FUSIONS, {"name": "bilinear_attention"}, "fusion")
  assert all(name in str(error.value) for name in FUSIONS)


def test_registry_holds_every_method_of_the_zoo():
  assert set(FUSIONS) == {"concat", "late", "sum", "mean", "max", "product", "gmu", "attention",
                          "film", "tensor", "low_rank", "multiplicative", "mfb", "mult", "mbt"}


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_registered_fusion_builds_from_config_with_defaults_and_runs(name):
  module = registry.build(FUSIONS, {"name": name}, "fusion")
  features, masks = make_inputs(name, batch=2)
  # eval_shape traces the real `init`; compiling its initialisers would cost 6x the forward pass.
  variables = random_variables(module, features, masks)
  out = jax.jit(module.apply)(variables, features, masks)
  assert out.shape[0] == 2 and np.all(np.isfinite(out))


def test_model_from_config_with_low_rank_fusion_runs_and_trains_its_factors():
  config = {"encoders": {"text": {"name": "lstm", "vocab_size": 20, "embed_dim": 4, "hidden_dim": 8,
                                  "num_layers": 1},
                         "image": {"name": "conv_pool", "channels": 4}},
            "fusion": {"name": "low_rank", "dim": 8, "rank": 2},
            "heads": {"label": {"name": "linear", "num_classes": 3}}}
  rng = np.random.default_rng(5)
  batch = {"text": rng.integers(1, 20, (2, 5)).astype(np.int32),
           "text_mask": np.arange(5) < np.array([[5], [3]]),
           "image": rng.normal(size=(2, 8, 8, 3)).astype(np.float32)}
  model = model_from_config(config)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), batch)
  assert params["params"]["fusion"]["text_factor"].shape == (2, 8 + 1, 8)

  def loss(p):
    logits = model.apply(p, batch)["label"]
    return jnp.sum(logits * np.array([1.0, -2.0, 0.5], np.float32)), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
  for factor in ("image_factor", "text_factor"):
    assert np.any(np.asarray(grads["params"]["fusion"][factor]) != 0)
