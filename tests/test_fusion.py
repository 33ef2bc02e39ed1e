"""Fusion zoo: each method's identity (low-rank = CP-factored tensor fusion, tensor fusion's terms,
the GMU, FiLM, MFB, MulT and MBT equations), the parameter-count formulas, additivity vs
interaction across modalities, MBT's late-fusion limit, padding and absent modalities,
jit/vmap/grad/bfloat16, and the registry.

The generic cases come from the registry and each fusion's `info` declaration
(`mmjax/fusion/info.py`): a new fusion is covered by registering it, and one without a declaration
fails `test_every_registered_fusion_declares_its_info` only."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import registry
from mmjax.fusion import (FUSIONS, FiLMFusion, GatedMultimodalUnit, LowRankFusion, MBTFusion,
                          MFBFusion, MulTFusion, TensorFusion)
from mmjax.fusion.info import FusionInfo
from mmjax.layers.transformer import sinusoidal_positions
from mmjax.model import model_from_config

DIMS = {"audio": 3, "image": 5, "text": 4}          # sorted order: audio, image, text
LENGTHS = {"audio": 5, "image": 2, "text": 4}       # unaligned sequences for the sequence fusions
DECLARED = sorted(name for name in FUSIONS if isinstance(getattr(FUSIONS[name], "info", None),
                                                         FusionInfo))
SEQUENCE = [name for name in DECLARED if FUSIONS[name].info.sequence]
ADDITIVE = [name for name in DECLARED if FUSIONS[name].info.additive]
INTERACTING = [name for name in DECLARED if not FUSIONS[name].info.additive]


def info(name):
  return FUSIONS[name].info


def small(name, **overrides):
  return FUSIONS[name](**{**info(name).small, **overrides})


@pytest.fixture(autouse=True, scope="module")
def fast_compilation():
  """These tiny programs are compile-bound (most of all the transformers' gradients): trade XLA's
  optimisation passes for compile time in this module only."""
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def default_modalities(name):
  """Three modalities where the method takes them, except two for the sequence fusions (compile
  time)."""
  declared = info(name)
  three = declared.max_modalities is None or declared.max_modalities >= 3
  return sorted(DIMS) if three and not declared.sequence else ["audio", "text"]


def make_inputs(name, batch=3, seed=0, leading=(), modalities=None):
  """Random `({m: (*leading, B, D_m) or (*leading, B, T_m, D_m)}, masks or None)` for fusion `name`."""
  rng = np.random.default_rng(seed)
  names = modalities or default_modalities(name)
  if not info(name).sequence:
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


def param_count(module, features, masks=None):
  shapes = jax.eval_shape(module.init, jax.random.key(0), features, masks)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_registered_fusion_declares_its_info(name):
  declared = getattr(FUSIONS[name], "info", None)
  assert isinstance(declared, FusionInfo), (
      f"fusion {name!r} ({FUSIONS[name].__module__}.{FUSIONS[name].__name__}) declares no info; "
      "add `info: ClassVar[FusionInfo] = FusionInfo(parameter_count=..., additive=...)` beside "
      "its fields (see mmjax/fusion/info.py)")


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
  """h = g ⊙ tanh(W_a z_a) + (1 − g) ⊙ tanh(W_t z_t),  g = σ(W_g [z_a; z_t]), no biases."""
  features, _ = make_inputs("gmu", modalities=["audio", "text"])
  module = GatedMultimodalUnit(dim=6)
  p = random_variables(module, features)["params"]
  assert all(set(p[layer]) == {"kernel"} for layer in p)            # the paper has no biases
  za, zt = features["audio"], features["text"]
  h_a, h_t = np.tanh(za @ p["audio_hidden"]["kernel"]), np.tanh(zt @ p["text_hidden"]["kernel"])
  g = 1 / (1 + np.exp(-np.concatenate([za, zt], axis=1) @ p["gate"]["kernel"]))
  np.testing.assert_allclose(module.apply({"params": p}, features), g * h_a + (1 - g) * h_t,
                             rtol=1e-5, atol=1e-6)


def gmu_gates_and_hidden(module, features):
  """`(gate logits (B, M, d), hidden (M, B, d), output)` of a GMU over `features`, in numpy."""
  p = random_variables(module, features)["params"]
  names = sorted(features)
  joint = np.concatenate([features[m] for m in names], axis=1)
  logits = (joint @ p["gate"]["kernel"]).reshape(len(joint), len(names), module.dim)
  hidden = np.stack([np.tanh(features[m] @ p[m + "_hidden"]["kernel"]) for m in names])
  return logits, hidden, np.asarray(module.apply({"params": p}, features))


def test_gmu_with_three_modalities_has_one_independent_sigmoid_gate_per_modality():
  """The paper's general GMU: h = Σ_m σ(W_gm [z_a; z_i; z_t]) ⊙ tanh(W_m z_m), gates not
  normalised."""
  features, _ = make_inputs("gmu")
  logits, hidden, out = gmu_gates_and_hidden(GatedMultimodalUnit(dim=6), features)
  gates = 1 / (1 + np.exp(-logits))                                  # (B, M, d)
  np.testing.assert_allclose(out, np.einsum("bmd,mbd->bd", gates, hidden), rtol=1e-5, atol=1e-6)
  assert np.abs(gates.sum(axis=1) - 1).max() > 0.1                   # not a convex combination


def test_gmu_softmax_option_normalises_the_gates_over_modalities():
  """gate="softmax": h = Σ_m softmax_m(W_gm [z]) ⊙ tanh(W_m z_m)."""
  features, _ = make_inputs("gmu")
  logits, hidden, out = gmu_gates_and_hidden(GatedMultimodalUnit(dim=6, gate="softmax"), features)
  gates = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(out, np.einsum("bmd,mbd->bd", gates, hidden), rtol=1e-5, atol=1e-6)


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
  module = MFBFusion(dim=4, factor=3)
  p = random_variables(module, features)["params"]
  proj = lambda m: features[m] @ p[m + "_projection"]["kernel"] + p[m + "_projection"]["bias"]
  s = (proj("audio") * proj("text")).reshape(3, 4, 3).sum(axis=-1)
  power = np.sign(s) * np.sqrt(np.abs(s))
  expected = power / np.linalg.norm(power, axis=1, keepdims=True)
  got = module.apply({"params": p}, features)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def layer_norm(x, params, epsilon=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + epsilon) * params["scale"] + params["bias"]


def test_mult_without_attention_layers_is_scaled_positioned_normalised_last_step():
  """With no attention layers each stack is E then LayerNorm, E(u) = √d·u + PE; for two
  modalities (one stream per target, so the self stack is d wide too):
      z_α = LN_self(√d · LN_cross(√d · z_α W_α + PE) + PE), read at α's last real token."""
  features, masks = make_inputs("mult", batch=3)
  module = MulTFusion(model_dim=8, num_heads=2, num_layers=0, self_layers=0,
                      residual_projection=False)
  p = random_variables(module, features, masks)["params"]
  expected = []
  for target, source in (("audio", "text"), ("text", "audio")):
    x = features[target] @ p[f"{target}_projection"]["kernel"]
    positions = sinusoidal_positions(x.shape[1], 8)
    y = layer_norm(np.sqrt(8) * x + positions, p[f"{source}_to_{target}"]["norm"])
    z = layer_norm(np.sqrt(8) * y + positions, p[f"{target}_self"]["norm"])
    last = masks[target].sum(axis=1) - 1
    expected.append(z[np.arange(3), last])
  np.testing.assert_allclose(module.apply({"params": p}, features, masks),
                             np.concatenate(expected, axis=1), rtol=1e-4, atol=1e-5)
  assert set(p["audio_projection"]) == {"kernel"}                   # bias-free kernel-1 conv


def test_mult_self_attention_stack_is_max_of_layers_and_3_deep_by_default():
  features, masks = make_inputs("mult", batch=2)
  for layers, expected in ((1, 3), (5, 5)):
    module = MulTFusion(model_dim=8, num_heads=2, num_layers=layers)
    p = jax.eval_shape(module.init, jax.random.key(0), features, masks)["params"]
    assert sorted(k for k in p["audio_self"] if k.startswith("layer_")) == [
        f"layer_{i}" for i in range(expected)]
    assert sorted(k for k in p["text_to_audio"] if k.startswith("layer_")) == [
        f"layer_{i}" for i in range(layers)]


def mult_target_block(module, variables, features, masks, target_index):
  width = module.apply(variables, features, masks).shape[-1] // len(features)
  return lambda f: module.apply(variables, f, masks)[:, target_index * width:
                                                     (target_index + 1) * width]


def test_mult_target_stream_attends_to_the_source_modality():
  """Z_audio is built by audio queries attending to text keys: it must move when only the text
  changes (self-attention within audio would not)."""
  module = small("mult", residual_projection=False)
  features, masks = make_inputs("mult", batch=2)
  variables = random_variables(module, features, masks)
  audio_block = mult_target_block(module, variables, features, masks, 0)
  jacobian = jax.jit(jax.jacrev(lambda text: audio_block({**features, "text": text})))(
      features["text"])
  assert np.abs(np.asarray(jacobian)).max() > 1e-4


def test_mult_last_step_readout_equals_the_unpadded_sequence_readout():
  """pooling="last" reads each target at its last real token: padding a sequence (with any
  values) changes nothing, and each example alone, unpadded, gives the same output."""
  module = small("mult")
  features, masks = make_inputs("mult", batch=3, seed=7)
  variables = random_variables(module, features, masks)
  out = jax.jit(module.apply)(variables, features, masks)
  lengths = {m: masks[m].sum(axis=1) for m in masks}
  for b in range(3):
    alone = {m: features[m][b:b + 1, :lengths[m][b]] for m in features}
    np.testing.assert_allclose(module.apply(variables, alone, None)[0], out[b],
                               rtol=1e-4, atol=1e-5)


def test_mbt_with_no_layers_reads_out_each_modalitys_normalised_cls_token_and_averages():
  """L = 0: h = (1/M) Σ_m LN_m(cls_m + PE[0]) — the paper's CLS readout, averaged."""
  features, masks = make_inputs("mbt", batch=2)
  module = MBTFusion(model_dim=8, num_heads=2, num_layers=0, fusion_layer=0)
  p = random_variables(module, features, masks)["params"]
  position = sinusoidal_positions(1, 8)[0]
  expected = np.mean([layer_norm(p[f"{m}_cls"] + position, p[f"{m}_norm"]) for m in features],
                     axis=0)
  np.testing.assert_allclose(module.apply({"params": p}, features, masks),
                             np.broadcast_to(expected, (2, 8)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in DECLARED if info(n).max_modalities == 2])
def test_two_modality_fusions_reject_three(name):
  features, masks = make_inputs(name, modalities=sorted(DIMS))
  with pytest.raises(ValueError, match="fuses exactly 2 modalities, got 3"):
    small(name).init(jax.random.key(0), features, masks)


# --- parameter counts ------------------------------------------------------------------------

def bool_variants(name):
  """Each boolean field flipped from its default: each branch of the formula gets a case."""
  fields = registry.fields(FUSIONS[name])
  return [{f: not field.default} for f, field in fields.items() if isinstance(field.default, bool)]


OPTION_VARIANTS = {"late": [{"mixing": "learned"}], "mbt": [{"pooling": "mean"},
                                                            {"fusion_layer": 2, "num_layers": 2}],
                   "gmu": [{"gate": "softmax"}], "film": [{"conditioned": "text"}],
                   "mult": [{"self_layers": None}]}
PARAMETER_CASES = [(name, variant, modalities) for name in DECLARED
                   for variant in [{}] + bool_variants(name) + OPTION_VARIANTS.get(name, [])
                   for modalities in (["audio", "text"], sorted(DIMS))
                   if len(modalities) >= info(name).min_modalities
                   and (info(name).max_modalities or 3) >= len(modalities)]


@pytest.mark.parametrize("name,variant,modalities", PARAMETER_CASES,
                         ids=[f"{n}-{v}-{len(m)}" for n, v, m in PARAMETER_CASES])
def test_parameter_count_equals_the_declared_formula(name, variant, modalities):
  module = small(name, **variant)
  features, masks = make_inputs(name, batch=2, modalities=modalities)
  widths = {m: DIMS[m] for m in modalities}
  assert param_count(module, features, masks) == info(name).parameter_count(widths, module)


def test_parameter_formulas_match_hand_counts():
  """The declared formulas against numbers worked out by hand (D = 3, 5, 4)."""
  three = {"audio": 3, "image": 5, "text": 4}
  assert info("low_rank").parameter_count(three, LowRankFusion(dim=6, rank=3)) == 3 * 6 * 15 + 6 + 3
  assert info("gmu").parameter_count(three, GatedMultimodalUnit(dim=6)) == 6 * 12 + 3 * 6 * 12
  assert info("gmu").parameter_count({"audio": 3, "text": 4},
                                     GatedMultimodalUnit(dim=6, use_bias=True)) == 6 * 9 + 6 * 8
  assert info("tensor").parameter_count(three, TensorFusion()) == 0
  assert info("film").parameter_count(three, FiLMFusion(conditioned="image")) == 2 * 5 * 8


# --- gradients, additivity, interactions -----------------------------------------------------

F32, BF16 = jnp.float32, jnp.bfloat16
GRADIENT_CASES = [(n, {}, dtype) for n in DECLARED for dtype in (F32, BF16)] + [
    ("late", {"mixing": "learned"}, F32), ("gmu", {"use_bias": True}, F32),
    ("gmu", {"gate": "softmax"}, F32)]


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


@pytest.mark.parametrize("name", ADDITIVE)
def test_additive_fusion_then_linear_map_has_zero_mixed_second_derivative(name):
  """∂²y/∂z_audio ∂z_text ≡ 0 for y = rᵀ fusion(z): y = f(z_audio) + g(z_text)."""
  module = small(name)
  features, masks = make_inputs(name, batch=1, modalities=["audio", "text"])
  variables = random_variables(module, features, masks)
  r = np.random.default_rng(3).normal(
      size=jax.eval_shape(module.apply, variables, features, masks).shape).astype(np.float32)
  y = lambda za, zt: jnp.sum(r * module.apply(variables, {"audio": za, "text": zt}, masks))
  hessian = jax.jit(jax.jacfwd(jax.jacrev(y, argnums=0), argnums=1))(features["audio"],
                                                                      features["text"])
  np.testing.assert_array_equal(np.asarray(hessian), 0.0)


@pytest.mark.parametrize("name", INTERACTING)
def test_interaction_fusion_has_a_nonzero_mixed_difference(name):
  """f(a, t) − f(a', t) − f(a, t') + f(a', t') ≠ 0: the effect of one modality depends on the
  other (an additive fusion gives exactly 0). A difference, not a derivative: max is not additive,
  yet its mixed second derivative is 0 almost everywhere. Parameters ×3 make the transformers'
  attention sharp enough for the interaction to stand far above float32 rounding (~1e-6)."""
  module = small(name)
  features, masks = make_inputs(name, batch=1, modalities=["audio", "text"])
  variables = jax.tree.map(lambda x: 3 * x, random_variables(module, features, masks))
  f = jax.jit(lambda a, t: module.apply(variables, {"audio": a, "text": t}, masks))
  rng = np.random.default_rng(4)
  a, t = features["audio"], features["text"]
  a2, t2 = (rng.normal(size=x.shape).astype(np.float32) for x in (a, t))
  difference = f(a, t) - f(a2, t) - f(a, t2) + f(a2, t2)
  assert np.abs(np.asarray(difference)).max() > 1e-3


@pytest.mark.parametrize("num_layers,fusion_layer,is_late", [(1, 1, True), (1, 0, True),
                                                              (2, 0, False)])
def test_mbt_is_late_fusion_unless_two_bottleneck_layers_run(num_layers, fusion_layer, is_late):
  """∂ pooled_audio / ∂ z_text ≡ 0 for fusion_layer = num_layers (no bottleneck) and also for
  fusion_layer = num_layers − 1 (the bottleneck is written once but never read again); non-zero
  once a later layer reads what an earlier one wrote."""
  module = small("mbt", num_layers=num_layers, fusion_layer=fusion_layer, combine="concat")
  features, masks = make_inputs("mbt", batch=2)
  variables = random_variables(module, features, masks)
  width = info("mbt").small["model_dim"]
  audio_block = lambda zt: module.apply(variables, {**features, "text": zt}, masks)[:, :width]
  jacobian = np.asarray(jax.jit(jax.jacrev(audio_block))(features["text"]))
  if is_late:
    np.testing.assert_array_equal(jacobian, 0.0)
  else:
    assert np.abs(jacobian).max() > 1e-6


# --- transformations, dtypes, masks ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", DECLARED)
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


SEQUENCE_CASES = [(name, {}) for name in SEQUENCE] + [
    ("mult", {"pooling": "mean"}), ("mbt", {"pooling": "mean", "fusion_layer": 1,
                                            "combine": "concat"})]
SEQUENCE_IDS = [n + "".join(f"-{k}={v}" for k, v in o.items()) for n, o in SEQUENCE_CASES]


def scramble_padding(features, masks, seed=4):
  """`features` with every padded token replaced by large random values."""
  noise = np.random.default_rng(seed)
  return {m: np.where(masks[m][..., None], x, 100 * noise.normal(size=x.shape)).astype(np.float32)
          for m, x in features.items()}


@pytest.mark.parametrize("name,overrides", SEQUENCE_CASES, ids=SEQUENCE_IDS)
def test_sequence_fusion_output_ignores_padded_token_values(name, overrides):
  module = small(name, **overrides)
  features, masks = make_inputs(name, batch=2)
  assert features["audio"].shape[1] != features["text"].shape[1]   # unaligned lengths
  variables = random_variables(module, features, masks)
  scrambled = scramble_padding(features, masks)
  assert all(not np.allclose(scrambled[m], features[m]) for m in features)   # both have padding
  apply = jax.jit(module.apply) if overrides else jitted_apply(name)
  np.testing.assert_allclose(apply(variables, scrambled, masks), apply(variables, features, masks),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("absent", ["audio", "text"])
@pytest.mark.parametrize("name,overrides", SEQUENCE_CASES, ids=SEQUENCE_IDS)
def test_sequence_fusion_output_for_an_absent_modality_ignores_its_padded_values(
    name, overrides, absent):
  """Example 0 has no real `absent` token (what missing-modality evaluation feeds): changing its
  padded values changes no output, and every output is finite."""
  module = small(name, **overrides)
  features, masks = make_inputs(name, batch=2)
  masks = {**masks, absent: masks[absent].copy()}
  masks[absent][0] = False
  variables = random_variables(module, features, masks)
  apply = jax.jit(module.apply)
  reference = np.asarray(apply(variables, features, masks))
  for seed in (5, 6):
    scrambled = {**features, absent: scramble_padding(features, masks, seed)[absent]}
    np.testing.assert_allclose(apply(variables, scrambled, masks), reference, rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(reference))


@pytest.mark.parametrize("name", SEQUENCE)
def test_sequence_fusion_treats_vectors_as_length_one_sequences_and_ignores_their_masks(name):
  """What `MultimodalModel` passes: `(B, D)` features next to the encoders' `(B, T)` input masks
  (three modalities here, so MulT concatenates two cross-modal streams per target)."""
  features = {m: np.random.default_rng(0).normal(size=(2, DIMS[m])).astype(np.float32)
              for m in DIMS}
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
  assert set(FUSIONS) >= {"concat", "late", "sum", "mean", "max", "product", "gmu", "attention",
                          "film", "tensor", "low_rank", "multiplicative", "mfb", "mult", "mbt"}


@pytest.mark.parametrize("name", DECLARED)
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
