"""Modality balancing: OGM-GE's scores (Eq. 8), ratio (Eq. 9), coefficient (Eq. 10), noise and
window on hand-computed cases and inside the train step (`mmjax/balancing/`); Gradient-Blending's
weights by hand and from the trainer's logged estimates (`gradient_blend`)."""
import functools
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import modalities
from mmjax.balancing import OGMGE, balancing_config, balancing_from_config
from mmjax.errors import ConfigError
from mmjax.model import head_config
from mmjax.tasks import task_config, weighting_config
from mmjax.tasks.kinds import Classification, Regression
from mmjax.tasks.weighting import Fixed, GradientBlending
from mmjax.train import loop
from mmjax.train.step import train_step

from config_helpers import tiny_config
from test_modalities import _seed_state

TASKS = {"label": Classification(label_key="label")}


def test_scores_are_the_summed_true_class_probabilities_of_each_modality_alone():
  ogm = OGMGE(task="label")
  logits = {"audio": {"label": jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]))},
            "visual": {"label": jnp.log(jnp.array([[0.1, 0.9], [0.6, 0.4], [0.9, 0.1]]))}}
  batch = {"label": jnp.array([0, 1, 1]), "weight": jnp.array([1.0, 1.0, 0.0]),   # a padding row
           "audio": jnp.ones((3, 2)), "visual": jnp.ones((3, 2))}
  scores = ogm.sums(logits, batch, TASKS)
  assert float(scores["audio"]["score"]) == pytest.approx(0.7 + 0.8)
  assert float(scores["visual"]["score"]) == pytest.approx(0.1 + 0.4)
  assert float(scores["audio"]["count"]) == float(scores["visual"]["count"]) == 2
  unlabelled = ogm.sums(logits, {**batch, "label_mask": jnp.array([True, False, True])}, TASKS)
  assert float(unlabelled["audio"]["score"]) == pytest.approx(0.7)
  # an example without the audio (modality dropout, absent data) scores nothing for it
  absent = ogm.sums(logits, {**batch, "audio_mask": jnp.array([True, False, True])}, TASKS)
  assert (float(absent["audio"]["score"]), float(absent["audio"]["count"])) == (
      pytest.approx(0.7), 1)
  assert float(absent["visual"]["count"]) == 2
  nan = {**logits, "audio": {"label": logits["audio"]["label"].at[2].set(jnp.nan)}}
  assert np.isfinite(float(ogm.sums(nan, batch, TASKS)["audio"]["score"]))   # a padding row


def test_the_dominant_modality_is_damped_by_one_minus_tanh_of_alpha_rho():
  ratios, coefficients = OGMGE(alpha=0.5).coefficients({"audio": jnp.asarray(1.5),
                                                        "visual": jnp.asarray(0.5)})
  assert float(ratios["audio"]) == pytest.approx(3.0)
  assert float(ratios["visual"]) == pytest.approx(1 / 3)
  assert float(coefficients["audio"]) == pytest.approx(1 - math.tanh(0.5 * 3.0))
  assert float(coefficients["visual"]) == 1.0
  _, tied = OGMGE(alpha=0.5).coefficients({"audio": jnp.asarray(1.0), "visual": jnp.asarray(1.0)})
  assert float(tied["audio"]) == float(tied["visual"]) == 1.0   # ρ = 1 is "else 1"


def test_modulation_scales_adds_gradient_scale_noise_and_only_inside_the_window():
  rng = np.random.default_rng(0)
  grads = {"encoders_audio": {"kernel": jnp.asarray(rng.normal(0, 2.0, (100, 100)), jnp.float32)},
           "encoders_visual": {"kernel": jnp.asarray(rng.normal(0, 0.5, (100, 100)), jnp.float32)},
           "heads_label": {"kernel": jnp.ones((3, 3))}}
  # mean scores 3 and 1: sums over 2 examples each
  scores = {"audio": {"score": jnp.asarray(6.0), "count": jnp.asarray(2.0)},
            "visual": {"score": jnp.asarray(2.0), "count": jnp.asarray(2.0)}}
  collections = {"audio": "encoders_audio", "visual": "encoders_visual"}
  k = 1 - math.tanh(0.1 * 3.0)
  plain = OGMGE(noise=False, start_step=2, end_step=4)
  for step, active in ((1, False), (2, True), (3, True), (4, False)):
    out, values = plain.modulate(grads, scores, jnp.asarray(step), jax.random.key(0), collections)
    factor = k if active else 1.0
    np.testing.assert_allclose(out["encoders_audio"]["kernel"],
                               factor * grads["encoders_audio"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(out["encoders_visual"]["kernel"],
                                  grads["encoders_visual"]["kernel"])
    np.testing.assert_array_equal(out["heads_label"]["kernel"], grads["heads_label"]["kernel"])
    assert float(values["balancing/coefficient/audio"]) == pytest.approx(factor)
  noisy, _ = OGMGE(start_step=0, end_step=4).modulate(grads, scores, jnp.asarray(0),
                                                      jax.random.key(1), collections)
  for m, factor in (("audio", k), ("visual", 1.0)):   # noise on both, of each gradient's std
    g = np.asarray(grads[f"encoders_{m}"]["kernel"])
    noise = np.asarray(noisy[f"encoders_{m}"]["kernel"]) - factor * g
    assert noise.std() == pytest.approx(g.std(ddof=1), rel=0.03)
    assert abs(noise.mean()) < 0.05 * g.std()
  np.testing.assert_array_equal(noisy["heads_label"]["kernel"], grads["heads_label"]["kernel"])


def test_config_resolves_the_task_and_the_half_of_training_window():
  resolved = balancing_from_config(balancing_config("ogm_ge"), TASKS, ["audio", "visual"], 1000)
  assert (resolved.task, resolved.start_step, resolved.end_step, resolved.alpha) == (
      "label", 0, 500, 0.1)
  with pytest.raises(ValueError, match="OGM-GE scores a classification task"):
    balancing_from_config(balancing_config("ogm_ge"), {"y": Regression()}, ["a", "b"], 10)
  with pytest.raises(ValueError, match="the model has one"):
    balancing_from_config(balancing_config("ogm_ge"), TASKS, ["audio"], 10)


@pytest.mark.parametrize("per_task_gradients", [False, True])
def test_in_the_step_the_dominant_encoders_sgd_update_is_scaled_by_its_coefficient(
    data_dir, per_task_gradients):
  """With SGD the update is −lr·g: OGM (no noise) scales exactly the dominant encoder's data
  gradient, its output regulariser's part too, whether the weighting takes per-task gradients
  or not (bug caught: the regulariser's gradient modulated in one mode only)."""
  state, batch, _ = _seed_state(data_dir, tx=optax.sgd(1.0))
  tasks = {"label": Classification(label_key="label", confidence_penalty=0.5)}
  ogm = OGMGE(alpha=0.7, noise=False, task="label", start_step=0, end_step=10)
  weighting = Fixed(log_task_gradients=per_task_gradients)
  step = lambda **kw: jax.jit(functools.partial(
      train_step, tasks=tasks, schedule=optax.constant_schedule(1.0), weighting=weighting, **kw))
  rng = jax.random.key(0)
  modulated, metrics = step(balancing=ogm)(state, batch, rng)
  plain, _ = step()(state, batch, rng)
  variables = {"params": state.params}
  sums = lambda m: ogm.sums({m: state.apply_fn(variables, modalities.only(
      batch, (m,), ("image", "text")))}, batch, tasks)[m]
  scores = {m: sums(m)["score"] / sums(m)["count"] for m in ("image", "text")}
  dominant = max(scores, key=lambda m: float(scores[m]))
  other = ({"image", "text"} - {dominant}).pop()
  k = 1 - math.tanh(0.7 * float(scores[dominant] / scores[other]))
  assert float(metrics["values"][f"balancing/coefficient/{dominant}"]) == pytest.approx(k, rel=1e-5)
  assert float(metrics["values"][f"balancing/coefficient/{other}"]) == 1.0
  move = lambda new, name: jax.tree.map(jnp.subtract, new.params[name], state.params[name])
  for name, factor in ((f"encoders_{dominant}", k), (f"encoders_{other}", 1.0),
                       ("heads_label", 1.0), ("fusion", 1.0)):
    if name not in state.params:
      continue
    for a, b in zip(jax.tree.leaves(move(modulated, name)), jax.tree.leaves(move(plain, name))):
      np.testing.assert_allclose(a, factor * b, rtol=2e-4, atol=1e-7, err_msg=name)
  assert 0 < k < 1


def test_gradient_blending_weights_are_held_out_gain_over_squared_overfitting_growth():
  """w_k ∝ ΔG_k / ΔO_k² (Σ w = 1), by hand; the first estimate only records; a task that lost
  held-out ground gets 0; with no gain anywhere the weights stay."""
  blend = GradientBlending()
  state = blend.init_state(jnp.ones(3))
  np.testing.assert_allclose(state["weights"], [1 / 3] * 3)
  first = blend.estimate(state, [2.0, 2.2, 2.1], [2.1, 2.3, 2.2])
  np.testing.assert_allclose(first["weights"], [1 / 3] * 3)   # nothing to compare with yet
  second = blend.estimate(first, [1.0, 1.8, 2.0], [1.5, 2.0, 2.3])
  gain = np.array([2.1 - 1.5, 2.3 - 2.0, 0.0])         # the third rose: clipped to 0
  growth = np.array([(1.5 - 1.0) - 0.1, (2.0 - 1.8) - 0.1, (2.3 - 2.0) - 0.1])
  expected = gain / growth ** 2
  np.testing.assert_allclose(second["weights"], expected / expected.sum(), rtol=1e-5)
  assert int(second["estimates"]) == 2
  stuck = blend.estimate(second, [1.0, 1.8, 2.0], [1.6, 2.1, 2.4])
  np.testing.assert_allclose(stuck["weights"], second["weights"])
  np.testing.assert_allclose(blend.weights(None, second, jnp.array([1.0, 2.0, 1.0]), None),
                             np.array([1.0, 2.0, 1.0]) * second["weights"], rtol=1e-6)


def _blended_config(data_dir, total_steps=4):
  config = tiny_config(data_dir, total_steps)
  for m in ("image", "text"):
    config.model.heads[f"label_{m}"] = head_config("unimodal", modality=m, num_classes=9)
    config.tasks[f"label_{m}"] = task_config("classification", label_key="label", modality=m)
  config.task_weighting = weighting_config("gradient_blend", period_steps=2,
                                           heldout_split="train[:5%]")
  config.dataset.train_split = "train[5%:20%]"   # small: each estimate scores all of it
  return config


def test_the_trainer_estimates_the_blend_every_period_from_the_logged_losses(data_dir, tmp_path):
  """Estimates at steps 0, 2 and 4 (logged with the losses they used); the weights of steps 3
  and 4 are those of the estimate at step 2, by the formula on the logged losses."""
  config = _blended_config(data_dir)
  loop.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  estimates = {line["step"]: line for line in lines if line["split"] == "gradient_blend"}
  assert sorted(estimates) == [0, 2, 4]
  tasks = ["label", "label_image", "label_text"]
  vector = lambda step, key: np.array([estimates[step][f"{t}/{key}"] for t in tasks])
  # The state keeps the previous estimate's losses in float32.
  before = lambda key: vector(0, key).astype(np.float32).astype(np.float64)
  gain = np.maximum(before("heldout_loss") - vector(2, "heldout_loss"), 0)
  growth = ((vector(2, "heldout_loss") - vector(2, "train_loss"))
            - (before("heldout_loss") - before("train_loss")))
  ratios = gain / np.maximum(growth ** 2, 1e-8)   # |ΔO| floored at 1e-4
  expected = ratios / ratios.sum() if ratios.sum() > 0 else np.full(3, 1 / 3)
  np.testing.assert_allclose(vector(2, "weight"), expected, rtol=1e-4)
  np.testing.assert_allclose(vector(0, "weight"), [1 / 3] * 3)
  train = [line for line in lines if line["split"] == "train" and line["step"] == 4][0]
  np.testing.assert_allclose([train[f"{t}/weight"] for t in tasks], expected, rtol=1e-4)
  readers = loop.restore_checkpoint(config, str(tmp_path)).readers
  assert (len(readers["train[:5%]"]), len(readers["train[5%:20%]"])) == (450, 1350)   # of 9,000


@pytest.mark.parametrize("trained,heldout", [("train[5%:]", "train"), ("train[:50%]", "train[:5%]"),
                                             ("train[4%:]", "train[:5%]"),
                                             ("train[5%:]+validation", "validation[:10]")])
def test_a_held_out_split_sharing_examples_with_the_trained_one_is_a_config_error(
    shapes_builder, trained, heldout):
  with pytest.raises(ConfigError, match=f"heldout_split='{re.escape(heldout)}' holds examples of "
                                        f"the split trained on \\('{re.escape(trained)}'\\)"):
    loop._check_heldout(shapes_builder.info.splits, heldout, trained)
  loop._check_heldout(shapes_builder.info.splits, "train[:5%]", "train[5%:]")   # disjoint


def test_the_trainer_checks_the_held_out_split_before_compiling(data_dir):
  config = _blended_config(data_dir)
  config.dataset.train_split = "train"
  with pytest.raises(ConfigError, match=r"heldout_split='train\[:5%\]' holds examples of the "
                                        r"split trained on \('train'\)"):
    loop._setup(config)


@pytest.mark.parametrize("modality,message", [
    (None, "task 'label_image' has a unimodal head on 'image' but "
           "config.tasks.label_image.modality=None; set it to 'image'"),
    ("audio", "config.tasks.label_image.modality='audio' is not one of the encoders")])
def test_a_unimodal_heads_task_must_name_its_modality(data_dir, modality, message):
  """Before compiling (bug caught: a unimodal task left without `modality` silently counts the
  examples whose modality modality dropout removed)."""
  config = _blended_config(data_dir)
  config.tasks.label_image.modality = modality
  with pytest.raises(ConfigError, match=re.escape(message)):
    loop._setup(config)
