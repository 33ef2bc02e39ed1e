"""Modality balancing (`mmjax/balancing/`): OGM-GE's scores (Eq. 8), ratio (Eq. 9), coefficient
(Eq. 10), noise and window on hand-computed cases, and inside the train step."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import modalities
from mmjax.balancing import OGMGE, balancing_config, balancing_from_config
from mmjax.tasks.kinds import Classification, Regression
from mmjax.train.step import train_step

from test_modalities import _seed_state

TASKS = {"label": Classification(label_key="label")}


def test_scores_are_the_summed_true_class_probabilities_of_each_modality_alone():
  ogm = OGMGE(task="label")
  logits = {"audio": {"label": jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]))},
            "visual": {"label": jnp.log(jnp.array([[0.1, 0.9], [0.6, 0.4], [0.9, 0.1]]))}}
  batch = {"label": jnp.array([0, 1, 1]), "weight": jnp.array([1.0, 1.0, 0.0])}   # a padding row
  scores = ogm.sums(logits, batch, TASKS)
  assert float(scores["audio"]) == pytest.approx(0.7 + 0.8)
  assert float(scores["visual"]) == pytest.approx(0.1 + 0.4)
  unlabelled = ogm.sums(logits, {**batch, "label_mask": jnp.array([True, False, True])}, TASKS)
  assert float(unlabelled["audio"]) == pytest.approx(0.7)


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
  scores = {"audio": jnp.asarray(3.0), "visual": jnp.asarray(1.0)}
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


def test_in_the_step_the_dominant_encoders_sgd_update_is_scaled_by_its_coefficient(data_dir):
  """With SGD the update is −lr·g: OGM (no noise) scales exactly the dominant encoder's."""
  state, batch, tasks = _seed_state(data_dir, tx=optax.sgd(1.0))
  ogm = OGMGE(alpha=0.7, noise=False, task="label", start_step=0, end_step=10)
  step = lambda **kw: jax.jit(functools.partial(
      train_step, tasks=tasks, schedule=optax.constant_schedule(1.0), **kw))
  rng = jax.random.key(0)
  modulated, metrics = step(balancing=ogm)(state, batch, rng)
  plain, _ = step()(state, batch, rng)
  variables = {"params": state.params}
  scores = {m: ogm.sums({m: state.apply_fn(variables, modalities.only(batch, (m,),
                                                                      ("image", "text")))},
                        batch, tasks)[m] for m in ("image", "text")}
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
