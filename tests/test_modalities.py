"""Modality subsets and modality dropout (`mmjax/modalities.py`): the subset distribution of the
config, the absent rule, the draw (per example, per step, never the last modality), and the step
training on exactly the batch with the drawn modalities absent; the model's unimodal outputs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import modalities, registry
from mmjax.fusion import FUSIONS
from mmjax.errors import ConfigError
from mmjax.model import encoder_config, fusion_config, model_from_config
from mmjax.tasks.objective import tasks_from_config
from mmjax.train.state import create_train_state
from mmjax.train.step import train_step

from config_helpers import seed_config


def test_subsets_are_every_non_empty_subset_whole_set_first():
  assert modalities.subsets(["image", "audio", "text"]) == [
      ("audio", "image", "text"), ("audio", "image"), ("audio", "text"), ("image", "text"),
      ("audio",), ("image",), ("text",)]
  assert modalities.subset_name(("image", "audio")) == "audio+image"


def test_rates_give_the_independent_drops_conditioned_on_keeping_one():
  dropout = modalities.modality_dropout_from_config(
      {"rate": 0.5, "rates": {}, "subsets": {}}, ["image", "audio"])
  assert dropout.kept == (("audio", "image"), ("audio",), ("image",))
  np.testing.assert_allclose(dropout.probabilities, [1 / 3] * 3)
  dropout = modalities.modality_dropout_from_config(
      {"rate": 0.0, "rates": {"audio": 0.2, "image": 0.6}, "subsets": {}}, ["image", "audio"])
  # P(both) = 0.8·0.4, P(audio only) = 0.8·0.6, P(image only) = 0.2·0.4, over 1 − 0.2·0.6.
  np.testing.assert_allclose(dropout.probabilities, np.array([0.32, 0.48, 0.08]) / 0.88)
  given = modalities.modality_dropout_from_config(
      {"rate": 0.0, "rates": {}, "subsets": {"audio+image": 0.5, "image": 0.5}},
      ["image", "audio"])
  assert given.kept == (("audio", "image"), ("image",)) and given.probabilities == (0.5, 0.5)
  assert modalities.modality_dropout_from_config(
      {"rate": 0.0, "rates": {"image": 0.0}, "subsets": {}}, ["image", "audio"]) is None


@pytest.mark.parametrize("spec,message", [
    ({"rates": {"video": 0.5}}, "config.modality_dropout.rates.video: the model has no modality"),
    ({"rate": 1.5}, "config.modality_dropout.rate=1.5 must be in [0, 1]"),
    ({"rate": 1.0}, "drop every modality of every example"),
    ({"subsets": {"audio+video": 1.0}}, "config.modality_dropout.subsets.audio+video: not a"),
    ({"subsets": {"audio": 0.5}}, "config.modality_dropout.subsets sum to 0.5"),
    ({"rate": 0.3, "subsets": {"audio": 1.0}}, "sets both rates and subsets"),
])
def test_bad_modality_dropout_is_one_config_error(spec, message):
  with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("[", r"\[")):
    modalities.modality_dropout_from_config(spec, ["image", "audio"])


def _batch(rows=4096):
  rng = np.random.default_rng(0)
  return {"image": jnp.asarray(rng.normal(size=(rows, 3, 3, 1)), jnp.float32),
          "text": jnp.asarray(rng.integers(1, 9, size=(rows, 5)), jnp.int32),
          "audio": jnp.asarray(rng.normal(size=(rows, 6, 2)), jnp.float32),
          "audio_mask": jnp.asarray(rng.random((rows, 6)) < 0.8)}


def test_the_draw_follows_the_distribution_and_makes_the_dropped_modalities_absent():
  dropout = modalities.modality_dropout_from_config(
      {"rates": {"audio": 0.3, "image": 0.5, "text": 0.1}}, ["image", "text", "audio"])
  batch = _batch()
  dropped, fractions = dropout(batch, jax.random.key(3))
  kept = np.stack([np.asarray(modalities.present(dropped, m)) for m in dropout.modalities], 1)
  assert kept.any(axis=1).all()   # never every modality
  expected = dict(zip(map(modalities.subset_name, dropout.kept), dropout.probabilities))
  for name, fraction in fractions.items():
    # 4,096 draws: a binomial's std is at most 0.008.
    assert float(fraction) == pytest.approx(expected.get(name.split("/")[1], 0.0), abs=0.03)
    subset = name.split("/")[1].split("+")
    exact = np.all(kept == np.array([m in subset for m in dropout.modalities]), axis=1)
    assert float(fraction) == pytest.approx(exact.mean())
  for column, m in enumerate(dropout.modalities):
    gone = ~kept[:, column]
    assert not np.asarray(dropped[m][gone]).any()   # zeros
    mask = np.asarray(dropped[f"{m}_mask"])
    assert not mask[gone].any()
  # a token modality without a mask gets a (B, T) one; a real example keeps its own mask
  assert dropped["text_mask"].shape == batch["text"].shape
  still = kept[:, dropout.modalities.index("audio")]
  np.testing.assert_array_equal(np.asarray(dropped["audio_mask"])[still],
                                np.asarray(batch["audio_mask"])[still])
  np.testing.assert_array_equal(np.asarray(dropped["image"])[kept[:, 1]],
                                np.asarray(batch["image"])[kept[:, 1]])


def test_an_example_keeps_what_it_has_when_the_draw_would_leave_it_nothing():
  """Image absent in the data of half the examples; the draw keeps image alone for a half."""
  dropout = modalities.ModalityDropout(("audio", "image"), (("audio", "image"), ("image",)),
                                       (0.5, 0.5))
  batch = {"image": jnp.ones((1000, 2)), "image_mask": jnp.arange(1000) % 2 == 0,
           "audio": jnp.ones((1000, 3))}
  dropped, fractions = dropout(batch, jax.random.key(0))
  has_image = np.arange(1000) % 2 == 0
  audio = np.asarray(modalities.present(dropped, "audio"))
  assert audio[~has_image].all()   # its only modality, whatever the draw
  assert not np.asarray(modalities.present(dropped, "image"))[~has_image].any()
  assert 0.2 < (~audio[has_image]).mean() < 0.3 * 2
  assert float(sum(fractions.values())) == pytest.approx(1.0)
  assert float(fractions["modality_dropout/image"]) == pytest.approx((~audio).mean())


def test_the_draw_is_the_global_batchs_on_every_device_block():
  """Under a per-device driver each device slices the global draw (its rows' block)."""
  dropout = modalities.modality_dropout_from_config({"rate": 0.4}, ["image", "text"])
  batch = {k: v[:64] for k, v in _batch().items() if k in ("image", "text")}
  whole, whole_fractions = dropout(batch, jax.random.key(5))
  blocks = jax.tree.map(lambda x: x.reshape(4, 16, *x.shape[1:]), batch)
  per_device, fractions = jax.vmap(functools.partial(dropout, key=jax.random.key(5),
                                                     axis_name="d"), axis_name="d")(blocks)
  for key in ("image_mask", "text_mask"):
    np.testing.assert_array_equal(np.asarray(per_device[key]).reshape(whole[key].shape),
                                  np.asarray(whole[key]))
  for name, value in whole_fractions.items():
    np.testing.assert_allclose(np.asarray(fractions[name]), float(value))   # psum'd, replicated


def _seed_state(data_dir, fusion="concat", tx=None):
  from mmjax import data
  config = seed_config(data_dir)
  config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=8)
  config.model.encoders.image = encoder_config("conv_pool", channels=4)
  sized = "dim" in registry.fields(FUSIONS[fusion])
  config.model.fusion = fusion_config(fusion, **({"dim": 8} if sized else {}))
  builder = data.prepare("mm_shapes", data_dir)
  batch = data.ExampleReader(builder, "train", cache="memory").read(np.arange(32))
  model = model_from_config(config.model, config.tasks)
  state = create_train_state(model, tx or optax.sgd(0.1), batch, jax.random.key(0))
  return state, {k: jnp.asarray(v) for k, v in batch.items()}, tasks_from_config(config.tasks)


def test_the_step_trains_on_the_batch_with_the_drawn_modalities_absent_new_draws_each_step(
    data_dir):
  state, batch, tasks = _seed_state(data_dir)
  dropout = modalities.modality_dropout_from_config({"rate": 0.5}, ["image", "text"])
  step = jax.jit(functools.partial(train_step, tasks=tasks, schedule=optax.constant_schedule(0.1),
                                   modality_dropout=dropout))
  plain = jax.jit(functools.partial(train_step, tasks=tasks,
                                    schedule=optax.constant_schedule(0.1)))
  rng = jax.random.key(7)
  kept_per_step = []
  for number in (0, 1):
    at = state.replace(step=jnp.asarray(number, state.step.dtype))
    # the step's own draw: the key of (rng, step), folded as the step folds it
    key = jax.random.fold_in(jax.random.fold_in(rng, number), 2 ** 30 + 1)
    dropped, fractions = dropout(batch, key)
    kept_per_step.append(np.asarray(dropped["image_mask"]))
    new, metrics = step(at, batch, rng)
    expected, _ = plain(at, dropped, rng)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected.params)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for name, value in fractions.items():
      assert float(metrics["values"][name]) == pytest.approx(float(value))
  # a step that reused one draw at every step would drop the same examples twice
  assert (kept_per_step[0] != kept_per_step[1]).any()


@pytest.mark.parametrize("fusion", ["concat", "tensor", "low_rank", "late", "gmu"])
def test_unimodal_outputs_equal_the_model_on_the_batch_with_the_others_absent(data_dir, fusion):
  state, batch, _ = _seed_state(data_dir, fusion)
  variables = {"params": state.params}
  _, unimodal = state.apply_fn(variables, batch, method="with_unimodal")
  for m in ("image", "text"):
    alone = modalities.only(batch, (m,), ("image", "text"))
    np.testing.assert_allclose(unimodal[m]["label"], state.apply_fn(variables, alone)["label"],
                               rtol=1e-5, atol=1e-6)
  assert not np.allclose(unimodal["image"]["label"], unimodal["text"]["label"])


def test_modality_dropout_beside_a_contrastive_task_is_a_config_error(data_dir):
  """A pair with one side absent would have zero embeddings (a NaN gradient of the norm)."""
  from config_helpers import every_evaluator_config
  from mmjax.train import loop
  config = every_evaluator_config(data_dir)
  config.modality_dropout.rate = 0.3
  with pytest.raises(ConfigError, match="config.modality_dropout with the contrastive task "
                                        "'pair'"):
    loop._setup(config)


@pytest.mark.parametrize("fusion", ["concat", "low_rank"])
def test_a_learned_absent_embedding_stands_for_an_absent_modality_and_is_trained(data_dir,
                                                                                 fusion):
  """It starts at zero (the model's outputs are those without it), replaces the features of the
  examples that lack the modality (and of the others' in the unimodal outputs), and modality
  dropout's gradient reaches it."""
  state, batch, tasks = _seed_state(data_dir, fusion)
  from mmjax.model import MultimodalModel
  plain_model = state.apply_fn.__self__
  model = MultimodalModel(plain_model.encoders, plain_model.fusion, plain_model.heads,
                          absent_embedding=True)
  params = model.init(jax.random.key(0), batch)["params"]
  assert not np.asarray(params["absent_image"]["embedding"]).any()
  shared = {k: v for k, v in params.items() if not k.startswith("absent_")}
  np.testing.assert_allclose(model.apply({"params": params}, batch)["label"],
                             plain_model.apply({"params": shared}, batch)["label"], rtol=1e-6)
  params = {**params, "absent_image": {"embedding": jnp.linspace(-1, 1, params[
      "absent_image"]["embedding"].shape[0])}}
  _, unimodal = model.apply({"params": params}, batch, method="with_unimodal")
  alone = modalities.only(batch, ("text",), ("image", "text"))
  np.testing.assert_allclose(unimodal["text"]["label"],
                             model.apply({"params": params}, alone)["label"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(model.apply({"params": params}, alone)["label"],
                         plain_model.apply({"params": shared}, alone)["label"])
  state = create_train_state(model, optax.sgd(0.1), batch, jax.random.key(0))
  dropout = modalities.modality_dropout_from_config({"rate": 0.5}, ["image", "text"])
  new, _ = jax.jit(functools.partial(train_step, tasks=tasks,
                                     schedule=optax.constant_schedule(0.1),
                                     modality_dropout=dropout))(state, batch, jax.random.key(1))
  assert np.asarray(new.params["absent_image"]["embedding"]).any()
