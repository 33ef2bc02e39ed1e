"""MultimodalModel: composition from config, additivity of concat + linear, losses and sums."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import registry
from mmjax.encoders import ENCODERS
from mmjax.fusion import FUSIONS
from mmjax.model import fusion_config, model_from_config
from mmjax.tasks.heads import HEADS

SMALL = {
    "encoders": {"text": {"name": "lstm", "vocab_size": 20, "embed_dim": 4, "hidden_dim": 8,
                          "num_layers": 1},
                 "image": {"name": "conv_pool", "channels": 4}},
    "fusion": {"name": "concat"},
    "heads": {"label": {"name": "linear", "num_classes": 3}},
}
RNG = np.random.default_rng(0)


def batch(size=2):
  return {"text": RNG.integers(1, 20, (size, 5)).astype(np.int32),
          "text_mask": np.ones((size, 5), bool),
          "image": RNG.normal(size=(size, 8, 8, 3)).astype(np.float32),
          "label": RNG.integers(0, 3, (size,)).astype(np.int32)}


def test_seed_model_logits_are_additive_across_modalities():
  """concat -> Dense: logits(t, i) = f(t) + g(i), so swapping images shifts logits by g only."""
  model = model_from_config(SMALL)
  a, b = batch(), batch()
  params = model.init(jax.random.key(0), a)
  logits = lambda text, image: model.apply(params, {**a, "text": text, "image": image})["label"]
  lhs = logits(a["text"], a["image"]) - logits(a["text"], b["image"])
  rhs = logits(b["text"], a["image"]) - logits(b["text"], b["image"])
  np.testing.assert_allclose(lhs, rhs, atol=1e-5)


def test_model_ignores_batch_keys_it_has_no_encoder_for():
  model = model_from_config(SMALL)
  a = batch()
  params = model.init(jax.random.key(0), a)
  np.testing.assert_array_equal(model.apply(params, a)["label"],
                                model.apply(params, {**a, "audio": np.ones(3)})["label"])


@pytest.mark.parametrize("part,message", [
    ("fusion", "unknown fusion 'concatt'; valid fusion names are: .*concat"),
    ("encoder", "unknown encoder 'lstmm'; valid encoder names are: ast, bert, clip_text, "
                "clip_vision, conv_pool, feature_tokens"),
])
def test_unknown_names_list_the_valid_ones(part, message):
  config = {**SMALL, "encoders": dict(SMALL["encoders"]), "fusion": dict(SMALL["fusion"])}
  if part == "fusion":
    config["fusion"] = {"name": "concatt"}
  else:
    config["encoders"]["text"] = {**SMALL["encoders"]["text"], "name": "lstmm"}
  with pytest.raises(ValueError, match=message):
    model_from_config(config)


def test_bad_constructor_argument_names_the_module():
  config = {**SMALL, "heads": {"label": {"name": "linear", "num_classes": 3, "width": 2}}}
  with pytest.raises(ValueError, match="head 'linear' has no field width; its fields are: "
                                       "num_classes, dtype"):
    model_from_config(config)


def _registered():
  return [(kind, reg, name) for kind, reg in (("encoder", ENCODERS), ("fusion", FUSIONS),
                                              ("head", HEADS)) for name in sorted(reg)]


REQUIRED = {"vocab_size": 30, "num_classes": 3, "modality": "image"}


@pytest.mark.parametrize("kind,reg,name", _registered(),
                         ids=[f"{k}-{n}" for k, _, n in _registered()])
def test_config_spec_lists_every_field_and_builds_the_module_with_its_defaults(kind, reg, name):
  fields = registry.fields(reg[name])
  required = {f: REQUIRED[f] for f, field in fields.items()
              if field.default is registry.dataclasses.MISSING
              and field.default_factory is registry.dataclasses.MISSING}
  spec = registry.spec(reg, name, kind, **required)
  assert set(spec) == {"name", *fields}
  assert registry.build(reg, spec, kind) == reg[name](**required)


def test_every_field_of_a_spec_can_be_overridden_on_the_command_line():
  from ml_collections.config_flags import config_path   # what --config.a.b=VALUE calls
  spec = fusion_config("mult")
  config_path.set_value("self_layers", spec, 2)          # a None default: a typed placeholder
  config_path.set_value("dtype", spec, "bfloat16")
  module = registry.build(FUSIONS, spec, "fusion")
  assert module.self_layers == 2 and module.dtype == jnp.bfloat16


def test_unknown_field_is_one_line_naming_the_valid_fields():
  with pytest.raises(ValueError) as error:
    fusion_config("low_rank", rankk=8)
  assert str(error.value) == ("fusion 'low_rank' has no field rankk; its fields are: dim, rank, "
                              "rank_weights, dtype")
  with pytest.raises(ValueError, match="fusion 'low_rank' has no field rankk; its fields are"):
    registry.build(FUSIONS, {"name": "low_rank", "rankk": 8}, "fusion")


def test_modules_compute_in_the_model_dtype_unless_their_spec_sets_one():
  config = {**SMALL, "dtype": "bfloat16",
            "fusion": fusion_config("concat", dtype=None),
            "heads": {"label": {"name": "linear", "num_classes": 3, "dtype": "float32"}}}
  model = model_from_config(config)
  assert model.fusion.dtype == jnp.bfloat16 and model.encoders["text"].dtype == jnp.bfloat16
  assert model.heads["label"].dtype == jnp.float32
