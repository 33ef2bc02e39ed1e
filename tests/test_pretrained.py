"""Pretrained towers compute what the reference implementations compute.

Each fixture under tests/data/pretrained is a tiny random model built and saved by transformers
(experiments/pretrained/make_fixtures.py) with the reference's outputs on fixed inputs. mmjax
loads the checkpoint and must match every stored output: every layer's hidden states, the pooled
outputs, the projected embeddings and the image-text logits.

The float32 bound is 1e-5 of each output's largest magnitude: both sides compute in float32 with
different summation orders (torch's kernels vs XLA's), so elementwise differences of a few float32
ulps of the output's scale (measured: at most 6e-7 of it) are rounding; a mapping bug is of the
order of the output itself (each planted bug below misses the bound by > 100×). Relative to the
largest magnitude, not elementwise, because entries near zero make elementwise ratios meaningless.
In bfloat16 compute (float32 parameters) the bound is 5e-2 of the output's scale: bfloat16 keeps
8 bits of mantissa (relative rounding 2^-8 ≈ 4e-3 per operation), compounded over two layers of
attention, MLP and normalisation (measured below: at most 2.2e-2).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pretrained_helpers import CASES, TOWER_CASES, path, reference, tower
from process_helpers import host_devices_env

from mmjax import pretrained
from mmjax.errors import ConfigError
from mmjax.pretrained import blocks, loading
from mmjax.pretrained.files import Tensors, write_safetensors

FLOAT32_BOUND = 1e-5
BFLOAT16_BOUND = 5e-2


def scaled_error(got, want) -> float:
  """max |got − want| / max |want|."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


def run_case(case: str, model=None):
  """`{reference output name: mmjax's output}` for the stored inputs of fixture `case`."""
  ref = reference(case)
  model = model or pretrained.load(path(case))
  mask = ref["attention_mask"] if "attention_mask" in ref.files else None
  if CASES[case] in ("clip", "siglip"):
    out = model(ref["pixel_values"].transpose(0, 2, 3, 1), ref["input_ids"], mask)
    towers = {"vision.": out.pop("vision_model_output"), "text.": out.pop("text_model_output")}
  elif CASES[case] in ("bert", "roberta"):
    tokens = ref["token_type_ids"] if "token_type_ids" in ref.files else None
    towers = {"": model(ref["input_ids"], mask, token_type_ids=tokens)}
    out = {}
  elif CASES[case] == "vit":
    towers, out = {"": model(ref["pixel_values"].transpose(0, 2, 3, 1))}, {}
  else:
    towers, out = {"": model(ref["input_values"])}, {}
  for prefix, tower_out in towers.items():
    for i, hidden in enumerate(tower_out.pop("hidden_states")):
      out[f"{prefix}hidden_states_{i}"] = hidden
    out.update({prefix + k: v for k, v in tower_out.items()})
  return out


def errors(case: str, model=None):
  """`{output: scaled error}` for every output the fixture stores (the reference's names)."""
  ref, out = reference(case), run_case(case, model)
  stored = [k for k in ref.files if k not in ("meta", "input_ids", "attention_mask",
                                              "token_type_ids", "pixel_values", "input_values")]
  missing = [k for k in stored if k not in out]
  assert not missing, f"mmjax gives no {missing}"
  return {k: scaled_error(out[k], ref[k]) for k in stored}


def test_every_architecture_has_a_reference_fixture():
  assert set(pretrained.MODEL_TYPES) - {"clip_vision_model", "clip_text_model",
                                        "siglip_vision_model", "siglip_text_model"} \
      == set(CASES.values())
  assert set(TOWER_CASES) == set(pretrained.TOWERS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_outputs_match_the_reference(case):
  found = errors(case)
  assert len(found) >= 5
  assert max(found.values()) < FLOAT32_BOUND, found


@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_compute_stays_within_its_bound(case):
  found = errors(case, pretrained.load(path(case), dtype=jnp.bfloat16))
  assert max(found.values()) < BFLOAT16_BOUND, found


def test_stored_hidden_states_cover_every_layer():
  ref = reference("bert")
  config = json.load(open(os.path.join(path("bert"), "config.json")))
  assert {f"hidden_states_{i}" for i in range(config["num_hidden_layers"] + 1)} <= set(ref.files)


# --- planted one-line bugs: each must break parity --------------------------------------------

def _load_with_table(case, edit, **overrides):
  module = pretrained.build(path(case), **overrides)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                *pretrained.example_inputs(module),
                                                method="outputs"))["params"]
  tensors = Tensors(path(case))
  table = edit(dict(module.pretrained_table(tensors, path(case))))
  params = loading.load_params(table, abstract, path(case), tensors)
  return pretrained.Pretrained(module, params, {})


def test_a_transposed_kernel_breaks_parity():
  def untransposed(table):
    key = "vision/encoder/layer_0/attention/query/kernel"
    table[key] = loading.Source(table[key].name, loading.same)
    return table
  assert max(errors("clip_quick_gelu", _load_with_table("clip_quick_gelu", untransposed))
             .values()) > 100 * FLOAT32_BOUND


def test_swapped_query_and_key_break_parity():
  def swapped(table):
    for kind in ("kernel", "bias"):
      q, k = (f"encoder/layer_1/attention/{n}/{kind}" for n in ("query", "key"))
      table[q], table[k] = table[k], table[q]
    return table
  assert max(errors("vit", _load_with_table("vit", swapped)).values()) > 100 * FLOAT32_BOUND


def test_gelu_for_quick_gelu_breaks_parity():
  module = pretrained.build(path("clip_quick_gelu"))
  wrong = module.clone(vision=module.vision.clone(activation="gelu"),
                        text=module.text.clone(activation="gelu"))
  loaded = pretrained.load(path("clip_quick_gelu"))
  assert max(errors("clip_quick_gelu", loaded._replace(module=wrong)).values()) \
      > 100 * FLOAT32_BOUND


def test_a_missing_final_layer_norm_is_an_unread_tensor(monkeypatch):
  original = blocks.Tower.norm
  monkeypatch.setattr(blocks.Tower, "norm", lambda self, name: (
      (lambda x: x) if name == "final_layer_norm" else original(self, name)))
  with pytest.raises(ConfigError, match="text_model.final_layer_norm"):
    pretrained.load(path("clip_quick_gelu"))


def test_an_unnormalised_final_output_breaks_parity(monkeypatch):
  """The same bug where the loader cannot see it (the norm's parameters still loaded, its
  output not used): the BERT embedding LayerNorm skipped."""
  loaded = pretrained.load(path("bert"))
  original = blocks.Tower.norm

  def skipped(self, name):
    norm = original(self, name)
    return (lambda x: norm(x) * 0 + x) if name == "embedding_norm" else norm
  monkeypatch.setattr(blocks.Tower, "norm", skipped)
  assert max(errors("bert", loaded).values()) > 100 * FLOAT32_BOUND


# --- the same checkpoint through remat, scan and each attention path --------------------------

@pytest.mark.parametrize("variant", [dict(scan=True), dict(remat="full"),
                                     dict(remat="dots", scan=True), dict(attention="plain"),
                                     dict(attention="xla")])
@pytest.mark.parametrize("case", ["vit", "bert"])
def test_remat_scan_and_attention_paths_load_and_compute_the_same(case, variant):
  found = errors(case, pretrained.load(path(case), **variant))
  assert max(found.values()) < FLOAT32_BOUND, found


def test_scanned_parameters_are_the_layers_stacked():
  plain, scanned = (pretrained.load(path("vit"), scan=s).params for s in (False, True))
  stacked = scanned["encoder"]["layers"]["layer"]
  for i in range(2):
    np.testing.assert_array_equal(stacked["mlp"]["fc1"]["kernel"][i],
                                  plain["encoder"][f"layer_{i}"]["mlp"]["fc1"]["kernel"])


def test_remat_gives_the_same_gradient():
  ref = reference("vit")
  images = ref["pixel_values"].transpose(0, 2, 3, 1)

  def grads(**fields):
    loaded = pretrained.load(path("vit"), **fields)
    loss = lambda p: (loaded._replace(params=p)(images)["last_hidden_state"] ** 2).mean()
    return jax.grad(loss)(loaded.params)
  for a, b in zip(jax.tree.leaves(grads()), jax.tree.leaves(grads(remat="full"))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_dot_product_attention_equals_the_plain_softmax_with_a_padding_mask():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 12)).astype(np.float32)
  mask = np.arange(5)[None] < np.array([[5], [2]])
  attention_mask = mask[:, None, None, :]
  outs = {}
  for name in ("plain", "xla"):
    layer = blocks.Attention(num_heads=3, implementation=name)
    params = layer.init(jax.random.key(0), x, x, attention_mask)
    outs[name] = layer.apply(params, x, x, attention_mask)
  np.testing.assert_allclose(outs["plain"], outs["xla"], rtol=1e-5, atol=1e-6)


# --- position resampling, AST from image weights -------------------------------------------------

def test_bilinear_resampling_of_a_2x2_grid():
  grid = np.array([[0.0, 4.0], [8.0, 12.0]])[..., None]
  resized = loading.resample_grid(grid, (4, 4))[..., 0]
  np.testing.assert_allclose(resized[0], [0, 1, 3, 4], atol=1e-6)
  np.testing.assert_allclose(resized[:, 0], [0, 2, 6, 8], atol=1e-6)


def test_vit_at_another_resolution_keeps_the_class_position_and_resamples_the_grid():
  original = pretrained.load(path("vit")).params["position_embedding"]
  larger = pretrained.load(path("vit"), image_size=48)
  resampled = larger.params["position_embedding"]
  assert resampled.shape == (1, 1 + 36, original.shape[-1])
  np.testing.assert_array_equal(resampled[0, 0], original[0, 0])
  expected = loading.resample_grid(np.asarray(original[0, 1:]).reshape(4, 4, -1), (6, 6))
  np.testing.assert_allclose(resampled[0, 1:], expected.reshape(36, -1), rtol=1e-6)
  out = larger(np.zeros((1, 48, 48, 3), np.float32))
  assert out["last_hidden_state"].shape == (1, 37, original.shape[-1])


def test_ast_starts_from_vit_weights():
  vit = pretrained.load(path("vit"))
  ast = tower("ast", checkpoint=path("vit"), num_mel_bins=32, max_length=64,
              frequency_stride=4, time_stride=4)
  inputs = np.zeros((1, 64, 32), np.float32)
  abstract = jax.eval_shape(lambda: ast.init(jax.random.key(0), inputs))["params"]
  params = pretrained.load_into_params({"ast": ast}, {"ast": abstract}, log=None)["ast"]
  kernel = np.asarray(vit.params["patch_embedding"]["kernel"])
  np.testing.assert_allclose(params["patch_embedding"]["kernel"], kernel.sum(2, keepdims=True),
                             rtol=1e-6)
  np.testing.assert_array_equal(params["distillation_token"], vit.params["cls_token"])
  assert params["position_embedding"].shape == (1, 2 + 7 * 15, kernel.shape[-1])
  assert np.all(np.isfinite(ast.apply({"params": params}, inputs)))


# --- towers as mmjax encoders ---------------------------------------------------------------------

def test_clip_encoders_in_a_model_start_from_the_checkpoint():
  from mmjax.model import encoder_config, model_from_config, fusion_config, head_config
  model_config = {
      "encoders": {"image": encoder_config("clip_vision", checkpoint=path("clip_quick_gelu")),
                   "text": encoder_config("clip_text", checkpoint=path("clip_quick_gelu"))},
      "fusion": fusion_config("concat"), "heads": {"label": head_config("linear", num_classes=3)}}
  model = model_from_config(model_config)
  ref = reference("clip_quick_gelu")
  batch = {"image": ref["pixel_values"].transpose(0, 2, 3, 1), "text": ref["input_ids"],
           "text_mask": ref["attention_mask"].astype(bool)}
  params = model.init(jax.random.key(0), batch)["params"]
  params = pretrained.load_into_params(pretrained.checkpointed(model), params, log=None)
  features = model.apply({"params": params}, batch, method="encode")
  pair = pretrained.load(path("clip_quick_gelu"))(batch["image"], batch["text"],
                                                   batch["text_mask"])
  np.testing.assert_allclose(features["image"],
                             pair["vision_model_output"]["image_embeds"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(features["text"], pair["text_model_output"]["text_embeds"],
                             rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("features", ["cls", "mean", "pooler_output"])
def test_vit_pooling_choices(features):
  ref = reference("vit")
  images = ref["pixel_values"].transpose(0, 2, 3, 1)
  loaded = pretrained.load(path("vit"))
  module = tower("vit_pretrained", features=features)
  got = module.apply({"params": loaded.params}, images)
  last = ref["last_hidden_state"]
  want = {"cls": last[:, 0], "mean": last[:, 1:].mean(1), "pooler_output": ref["pooler_output"]}
  assert scaled_error(got, want[features]) < FLOAT32_BOUND


def test_an_architecture_field_left_unset_without_a_checkpoint_is_named():
  module = pretrained.TOWERS["vit_pretrained"]()
  with pytest.raises(ValueError, match=r"ViTImage\.\w+ is unset; give the encoder a checkpoint"):
    module.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))


def test_a_tower_only_checkpoint_loads_from_its_own_config(tmp_path):
  """`clip_vision_model` (CLIPVisionModelWithProjection's config) reads the vision tensors of
  the same file; the text tower's are outside its prefix and left alone."""
  config = json.load(open(os.path.join(path("clip_quick_gelu"), "config.json")))
  own = dict(config["vision_config"], projection_dim=config["projection_dim"])
  (tmp_path / "config.json").write_text(json.dumps(own))
  shutil.copy(os.path.join(path("clip_quick_gelu"), "model.safetensors"), tmp_path)
  vision = pretrained.load(str(tmp_path))
  ref = reference("clip_quick_gelu")
  out = vision(ref["pixel_values"].transpose(0, 2, 3, 1))
  assert scaled_error(out["last_hidden_state"], ref["vision.last_hidden_state"]) < FLOAT32_BOUND


# --- bad input: one line each ---------------------------------------------------------------------

def _copy(case, tmp_path):
  target = tmp_path / case
  shutil.copytree(path(case), target)
  return target


def _rewrite(directory, edit):
  tensors = Tensors(str(directory))
  arrays = edit({name: np.array(tensors.read(name)) for name in tensors.names()})
  del tensors
  write_safetensors(str(directory / "model.safetensors"), arrays)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    pretrained.load(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match="has no config.json"):
    pretrained.load(str(tmp_path / "empty"))
  other = _copy("vit", tmp_path)
  config = json.load(open(other / "config.json"))
  (other / "config.json").write_text(json.dumps(dict(config, model_type="llama")))
  with pytest.raises(ConfigError, match="'llama' model.*supported model types: "
                                        "audio-spectrogram-transformer, bert, clip"):
    pretrained.load(str(other))
  (other / "config.json").write_text(json.dumps(config))
  (other / "model.safetensors").rename(other / "pytorch_model.bin")
  with pytest.raises(ConfigError, match="pytorch_model.bin.*safe_serialization=True"):
    pretrained.load(str(other))


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path):
  missing = _copy("vit", tmp_path / "missing")
  _rewrite(missing, lambda t: {k: v for k, v in t.items() if k != "layernorm.weight"})
  with pytest.raises(ConfigError, match="has no tensor 'layernorm.weight'"):
    pretrained.load(str(missing))
  extra = _copy("vit", tmp_path / "extra")
  _rewrite(extra, lambda t: {**t, "encoder.layer.0.attention.extra.weight": np.zeros(3,
                                                                                    np.float32)})
  with pytest.raises(ConfigError, match="tensor 'encoder.layer.0.attention.extra.weight'"):
    pretrained.load(str(extra))
  with pytest.raises(ConfigError, match=r"'encoder.layer.0.intermediate.dense.weight' .* has "
                                        r"shape \(64, 32\) \(\(32, 64\) as the model lays it "
                                        r"out\), but the model's 'encoder/layer_0/mlp/fc1/kernel' "
                                        r"is \(32, 48\)"):
    pretrained.load(path("vit"), mlp_dim=48)


def test_positions_that_form_no_grid_cannot_be_resampled(tmp_path):
  odd = _copy("vit", tmp_path)
  _rewrite(odd, lambda t: {**t, "embeddings.position_embeddings":
                           t["embeddings.position_embeddings"][:, :16]})
  with pytest.raises(ConfigError, match="cannot resample position embeddings of shape "
                                        r"\(1, 16, 32\) to \(1, 17, 32\)"):
    pretrained.load(str(odd))


def test_shards_are_read_through_their_index():
  tensors = Tensors(path("bert"))
  index = json.load(open(os.path.join(path("bert"), "model.safetensors.index.json")))
  assert len(set(index["weight_map"].values())) >= 2
  assert set(tensors.names()) == set(index["weight_map"])


def test_safetensors_round_trip_in_every_float_dtype(tmp_path):
  import ml_dtypes
  arrays = {f"x_{np.dtype(d).name}": np.arange(6, dtype=np.float32).reshape(2, 3).astype(d)
            for d in (np.float32, np.float16, ml_dtypes.bfloat16, np.float64)}
  write_safetensors(str(tmp_path / "model.safetensors"), arrays)
  tensors = Tensors(str(tmp_path))
  for name, array in arrays.items():
    assert tensors.read(name).dtype == array.dtype
    np.testing.assert_array_equal(tensors.read(name), array)


SHARDED_LOAD = r'''
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from mmjax import pretrained
folder = sys.argv[1]
plain = pretrained.load(folder)
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
def sharding(x):   # split the first dimension divisible by 4 over 'fsdp', as FSDP would
  axes = [d for d, n in enumerate(x.shape) if n % 4 == 0]
  spec = [None] * x.ndim
  if axes:
    spec[axes[0]] = "fsdp"
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P(*spec)))
abstract = jax.tree.map(sharding, plain.params)
loaded = pretrained.load_into_params({"bert": plain.module}, {"bert": abstract}, log=None)["bert"]
same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), loaded,
                    plain.params)
placed = jax.tree.map(lambda a, s: a.sharding == s.sharding, loaded, abstract)
shards = jax.tree.map(lambda a: list(a.addressable_shards[0].data.shape), loaded)
print(json.dumps({"same": all(jax.tree.leaves(same)), "placed": all(jax.tree.leaves(placed)),
                  "kernel_shard": shards["encoder"]["layer_0"]["mlp"]["fc1"]["kernel"],
                  "devices": jax.device_count()}))
'''


def test_parameters_are_placed_directly_in_their_shardings_on_eight_devices():
  """Each tensor goes straight into its NamedSharding (split along 'fsdp' here), with the
  values of the unsharded load."""
  import subprocess
  import sys
  result = subprocess.run([sys.executable, "-c", SHARDED_LOAD, path("bert")], capture_output=True,
                          text=True, timeout=300,
                          env=host_devices_env(8))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report == {"same": True, "placed": True, "kernel_shard": [8, 64], "devices": 8}
