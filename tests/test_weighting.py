"""Task weighting inside the one train step: PCGrad's surgery, uncertainty weighting learning to
distrust a noise task, GradNorm's weight gradient and renormalisation, DWA's weights; and, through
the trainer, every strategy and both contrastive losses training from a config, the logged terms
adding up to the loss, exact resume with keyed PCGrad orders and GradNorm's state, and a linear
probe that leaves pre-trained encoders untouched."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import data
from mmjax.model import encoder_config, fusion_config, head_config, model_from_config
from mmjax.tasks import task_config, tasks_from_config, weighting_config
from mmjax.tasks.objective import objective_sums, parameter_regularizers
from mmjax.tasks.weighting import (DynamicWeightAveraging, GradNorm, project_conflicting,
                                   weighting_from_config)
from mmjax.train import loop
from mmjax.train.defaults import load_config, trainer_config
from mmjax.train.state import init_state, make_optimizer
from mmjax.train.step import task_weight_vectors, train_step

from config_helpers import REPO

CONFIGS = os.path.join(REPO, "experiments", "configs")


def pcgrad_reference(matrix, key):
  """The paper's Algorithm 1 in numpy loops, with the orders `project_conflicting` draws."""
  matrix = np.asarray(matrix, np.float64)
  keys = jax.random.split(key, len(matrix))
  result = []
  for i, row in enumerate(matrix):
    g = row.copy()
    for j in np.asarray(jax.random.permutation(keys[i], len(matrix))):
      if j != i and g @ matrix[j] < 0:
        g = g - (g @ matrix[j]) / (matrix[j] @ matrix[j]) * matrix[j]
    result.append(g)
  return np.stack(result)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_pcgrad_follows_the_algorithm_and_removes_conflicts(num_tasks):
  rng = np.random.default_rng(num_tasks)
  key = jax.random.key(7)
  matrix = rng.normal(size=(num_tasks, 12)).astype(np.float32)
  matrix[1] = -matrix[0] + 0.3 * rng.normal(size=12)     # a strong conflict
  projected = np.asarray(project_conflicting(jnp.asarray(matrix), key))
  np.testing.assert_allclose(projected, pcgrad_reference(matrix, key), rtol=1e-4, atol=1e-5)
  assert not np.allclose(projected[0], matrix[0])
  if num_tasks == 2:   # the paper's guarantee for two tasks
    inner = projected @ projected.T
    assert np.all(inner >= -1e-5), inner
    assert projected[0] @ matrix[1] >= -1e-5 and projected[1] @ matrix[0] >= -1e-5
  agreeing = np.abs(matrix)                                # no conflicts: nothing changes
  np.testing.assert_allclose(project_conflicting(jnp.asarray(agreeing), key), agreeing)


def test_pcgrad_orders_depend_on_the_key():
  """With three tasks the order matters; another key (another step) may give another result,
  the same key always the same one."""
  matrix = jnp.asarray([[1.0, 0.0], [-0.8, 0.6], [-0.6, -0.8]])
  first = project_conflicting(matrix, jax.random.key(0))
  np.testing.assert_array_equal(first, project_conflicting(matrix, jax.random.key(0)))
  results = {tuple(np.round(np.asarray(project_conflicting(matrix, jax.random.key(k))).ravel(), 5))
             for k in range(20)}
  assert len(results) > 1


def _features_setup(weighting, learning_rate=1e-2, frozen="", weights=(1.0, 1.0)):
  """One modality of 8 features; task `clean` = sign of feature 0, task `noise` = a coin."""
  config = trainer_config("synthetic")
  config.optimizer.update(learning_rate=learning_rate, warmup_steps=0, final_lr_fraction=1.0,
                          frozen=frozen)
  model = model_from_config({"encoders": {"x": encoder_config("mlp", hidden_dims=(16,), dim=8)},
                             "fusion": fusion_config("concat"),
                             "heads": {t: head_config("linear", num_classes=2)
                                       for t in ("clean", "noise")}})
  tasks = tasks_from_config({t: task_config("classification", weight=w)
                             for t, w in zip(("clean", "noise"), weights)})
  strategy = weighting_from_config(weighting_config(weighting))
  tx, schedule = make_optimizer(config.optimizer, 1000)
  static = task_weight_vectors(tasks)[0]

  def batch(step):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    return {"x": x, "clean": (x[:, 0] > 0).astype(np.int32),
            "noise": rng.integers(0, 2, 64).astype(np.int32)}

  state = init_state(model, tx, jax.random.key(0), batch(0),
                     weighting_params=strategy.init_params(static),
                     weighting_state=strategy.init_state(static))
  step = jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule, weighting=strategy,
                                   frozen=frozen))
  return state, step, batch


def test_uncertainty_weighting_lowers_the_weight_of_a_pure_noise_task():
  """At its optimum exp(−s_t) = 1 / (2 L_t): the noise task's loss stays at log 2, the clean
  one's falls, so the noise task ends with the smaller weight, below its start."""
  state, step, batch = _features_setup("uncertainty")
  for t in range(300):
    state, metrics = step(state, batch(t), jax.random.key(1))
  values = jax.device_get(metrics["values"])
  assert values["noise/loss"] > 0.6 and values["clean/loss"] < 0.2
  assert values["noise/weight"] < 0.9 < 1.0 < values["clean/weight"]
  assert values["noise/weight"] == pytest.approx(1 / (2 * values["noise/loss"]), rel=0.25)


def test_the_model_gradient_uses_the_learned_weights():
  """Uncertainty weights 1/4 and 1 (log-variances log 4 and 0) give the model the update that
  fixed weights 1/4 and 1 give."""
  learned, step, batch = _features_setup("uncertainty")
  learned = learned.replace(params={**learned.params, "task_weighting": {
      "log_variance": jnp.asarray([np.log(4.0), 0.0])}})
  fixed, fixed_step, _ = _features_setup("fixed", weights=(0.25, 1.0))
  a, from_learned = step(learned, batch(0), jax.random.key(1))
  b, from_fixed = fixed_step(fixed, batch(0), jax.random.key(1))
  assert float(from_learned["values"]["grad_norm"]) == pytest.approx(
      float(from_fixed["values"]["grad_norm"]), rel=1e-6)
  for x, y in zip(jax.tree.leaves(a.params["encoders_x"]), jax.tree.leaves(b.params["encoders_x"])):
    np.testing.assert_allclose(x, y, rtol=1e-6)


def test_gradnorm_weight_gradient_matches_its_loss_and_weights_are_renormalised():
  strategy = GradNorm(alpha=1.5)
  rng = np.random.default_rng(0)
  grads = {"encoders_x": {"kernel": jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)},
           "heads_a": {"kernel": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)}}
  weights, losses = jnp.asarray([0.5, 1.5]), jnp.asarray([0.9, 0.3])
  initial, counts = jnp.asarray([2.0, 0.5]), jnp.asarray([8.0, 8.0])
  seen = {"initial_losses": initial, "seen": jnp.ones(2, bool)}
  update = strategy.update({"weights": weights}, seen, losses, counts, grads, weights,
                           jnp.asarray(5), jax.random.key(0))
  norms = jnp.linalg.norm(grads["encoders_x"]["kernel"].reshape(2, -1), axis=1)   # shared only

  def gradnorm_loss(w):
    g = w * norms
    relative = losses / initial
    target = jax.lax.stop_gradient(jnp.mean(g) * (relative / relative.mean()) ** 1.5)
    return jnp.sum(jnp.abs(g - target))

  np.testing.assert_allclose(update.weighting_grads["weights"],
                             jax.grad(gradnorm_loss)(weights), rtol=1e-5)
  # Equal losses but a task that has trained 4x less (relative to L(0)): with equal G_t, the
  # weights move apart: up for the task lagging behind, down for the other.
  balanced = 1 / norms
  lagging = strategy.update({"weights": balanced}, {"initial_losses": jnp.asarray([1.0, 0.25]),
                                                    "seen": jnp.ones(2, bool)},
                            jnp.asarray([0.5, 0.5]), counts, grads, balanced, jnp.asarray(5),
                            jax.random.key(0))
  np.testing.assert_allclose(np.sign(lagging.weighting_grads["weights"]), [1.0, -1.0])
  np.testing.assert_allclose(update.model_grads["heads_a"]["kernel"],
                             0.5 * grads["heads_a"]["kernel"][0]
                             + 1.5 * grads["heads_a"]["kernel"][1], rtol=1e-6)
  # L_t(0) is the loss of the first step where task t has labels: here task 0 has none at first.
  state = strategy.init_state(jnp.ones(2))
  for count, expected in ((jnp.asarray([0.0, 8.0]), [0.0, 0.3]), (counts, [0.9, 0.3])):
    state = strategy.update({"weights": weights}, state, losses, count, grads, weights,
                            jnp.asarray(0), jax.random.key(0)).state
    np.testing.assert_allclose(state["initial_losses"], expected)
  later = strategy.update({"weights": weights}, state, 2 * losses, counts, grads, weights,
                          jnp.asarray(1), jax.random.key(0)).state
  np.testing.assert_allclose(later["initial_losses"], [0.9, 0.3])
  np.testing.assert_allclose(update.state["initial_losses"], initial)
  normalized = strategy.normalize({"weights": jnp.asarray([0.2, 0.6])}, jnp.ones(2))
  np.testing.assert_allclose(normalized["weights"], [0.5, 1.5])

  state, step, batch = _features_setup("gradnorm")
  for t in range(3):
    state, metrics = step(state, batch(t), jax.random.key(1))
  assert float(state.params["task_weighting"]["weights"].sum()) == pytest.approx(2.0, rel=1e-5)
  assert "grad_cosine/clean/noise" in metrics["values"]


def test_frozen_parameters_take_no_part_in_per_task_gradients():
  """With the only shared parameters (the encoder) frozen, PCGrad has nothing to project: the
  per-task gradients over shared parameters are zero, and the encoder does not move."""
  state, step, batch = _features_setup("pcgrad", frozen="^encoders_")
  new, metrics = step(state, batch(0), jax.random.key(1))
  assert float(metrics["values"]["clean/grad_norm"]) == 0.0
  for x, y in zip(jax.tree.leaves(state.params["encoders_x"]),
                  jax.tree.leaves(new.params["encoders_x"])):
    np.testing.assert_array_equal(x, y)
  moving = _features_setup("pcgrad")[1](state, batch(0), jax.random.key(1))[1]
  assert float(moving["values"]["clean/grad_norm"]) > 0


def test_a_gradnorm_layer_that_matches_nothing_is_one_line(data_dir):
  config = multitask_config(data_dir, "gradnorm")
  config.task_weighting.layer = "^fusion/"
  with pytest.raises(loop.ConfigError, match="layer='\\^fusion/' matches no shared parameter"):
    loop._setup(config)


def test_dwa_weights_follow_the_loss_ratios_of_the_two_previous_periods():
  strategy = DynamicWeightAveraging(temperature=2.0, period_steps=3)
  static = jnp.ones(2)
  state = strategy.init_state(static)
  np.testing.assert_allclose(strategy.weights(None, state, static, static), [1.0, 1.0])
  for step, losses in enumerate([[4.0, 2.0]] * 3 + [[2.0, 2.0]] * 3):
    state = strategy.update(None, state, jnp.asarray(losses), static, {}, static,
                            jnp.asarray(step), jax.random.key(0)).state
  ratios = np.array([2.0 / 4.0, 2.0 / 2.0])
  expected = 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
  np.testing.assert_allclose(strategy.weights(None, state, static, static), expected, rtol=1e-6)


def test_uncertainty_weights_start_at_the_likelihood_factor_half_for_a_gaussian_task():
  """c_t = ½ for regression, 1 for classification (Kendall et al.'s 1/(2σ²) and 1/σ²): at s = 0
  the weights are c_t·w_t. Bug caught: the Gaussian ½ dropped."""
  tasks = tasks_from_config({"label": task_config("classification", weight=2.0),
                             "size": task_config("regression", weight=3.0)})
  static, factors = task_weight_vectors(tasks)
  strategy = weighting_from_config(weighting_config("uncertainty"))
  np.testing.assert_allclose(strategy.weights(strategy.init_params(static), None, static, factors),
                             [2.0, 1.5])


def test_uncertainty_weight_settles_at_one_over_twice_the_loss_when_labels_are_sparse():
  """With task labels on a quarter of the steps (L = 1 there, 0 elsewhere), gradient descent on
  s reaches c·w·exp(−s) = 1 / (2L) = 0.5, as with labels on every step. Bug caught: the ½ s
  normaliser differentiated on unlabelled steps, which settles at 1 / (2·p·L) = 2."""
  strategy = weighting_from_config(weighting_config("uncertainty"))
  static = factors = jnp.ones(1)
  penalty_grad = jax.jit(jax.grad(strategy.penalty))

  def descend(params, step):
    observed = jnp.asarray([step % 4 == 0])
    counts, losses = jnp.where(observed, 8.0, 0.0), jnp.where(observed, 1.0, 0.0)
    weights = strategy.weights(params, None, static, factors)
    update = strategy.update(params, None, losses, counts, {}, weights, step, None)
    grad = update.weighting_grads["log_variance"] + penalty_grad(params, observed)["log_variance"]
    return {"log_variance": params["log_variance"] - 0.05 * grad}, None

  params, _ = jax.lax.scan(descend, strategy.init_params(static), jnp.arange(8000))
  assert float(strategy.weights(params, None, static, factors)[0]) == pytest.approx(0.5, rel=0.02)


def test_a_task_without_labels_in_a_step_adds_no_uncertainty_penalty_nor_its_gradient():
  state, step, batch = _features_setup("uncertainty")
  state = state.replace(params={**state.params, "task_weighting": {
      "log_variance": jnp.asarray([0.3, 0.7])}})
  unlabelled = {**batch(0), "noise_mask": np.zeros(64, bool)}
  new, metrics = step(state, unlabelled, jax.random.key(1))
  assert float(metrics["values"]["weighting/penalty"]) == pytest.approx(0.5 * 0.3)
  log_variance = np.asarray(new.params["task_weighting"]["log_variance"])
  assert log_variance[1] == pytest.approx(0.7) and log_variance[0] != pytest.approx(0.3)


def _gradnorm_inputs(num_tasks, seed=0):
  rng = np.random.default_rng(seed)
  grads = {"encoders_x": {"kernel": jnp.asarray(rng.normal(size=(num_tasks, 3, 4)), jnp.float32)},
           "heads_a": {"kernel": jnp.asarray(rng.normal(size=(num_tasks, 4)), jnp.float32)}}
  return grads, jnp.asarray(rng.uniform(0.5, 1.5, num_tasks), jnp.float32)


def test_gradnorm_leaves_a_task_without_labels_out_of_the_step():
  """Tasks 0 and 2 labelled, task 1 not (loss 0): the weight gradients of tasks 0 and 2 are those
  of GradNorm on those two tasks alone, task 1's is 0. Bug caught: its relative loss 0 counted
  into mean(L̃) and Ḡ, raising the others' targets."""
  strategy = GradNorm(alpha=1.5)
  grads, weights = _gradnorm_inputs(3)
  grads["encoders_x"]["kernel"] = grads["encoders_x"]["kernel"].at[1].set(0.0)
  seen = {"initial_losses": jnp.asarray([2.0, 1.0, 0.5]), "seen": jnp.ones(3, bool)}
  found = strategy.update({"weights": weights}, seen, jnp.asarray([0.9, 0.0, 0.3]),
                          jnp.asarray([8.0, 0.0, 8.0]), grads, weights, jnp.asarray(5),
                          jax.random.key(0)).weighting_grads["weights"]
  pair = jax.tree.map(lambda g: g[jnp.asarray([0, 2])], grads)
  alone = strategy.update({"weights": weights[::2]}, jax.tree.map(lambda x: x[::2], seen),
                          jnp.asarray([0.9, 0.3]), jnp.asarray([8.0, 8.0]), pair, weights[::2],
                          jnp.asarray(5), jax.random.key(0)).weighting_grads["weights"]
  np.testing.assert_allclose(found[::2], alone, rtol=1e-6)
  assert float(found[1]) == 0.0


def test_gradnorm_relative_loss_is_one_at_the_step_that_records_l0():
  """Task 0 has trained to half its L(0); task 1 has its first labels now, so L_1(0) is this
  step's loss and L̃ = (0.5, 1): targets Ḡ·(2/3, 4/3)^α. With G = Ḡ·(0.3, 1.7) task 0's weight
  must rise. Bug caught: the relative loss taken before L_1(0) is recorded (L / 0), which makes
  task 0's relative loss ~0 and lowers its weight instead."""
  strategy = GradNorm(alpha=1.5)
  grads, _ = _gradnorm_inputs(2)
  norms = jnp.linalg.norm(grads["encoders_x"]["kernel"].reshape(2, -1), axis=1)
  weights = jnp.asarray([0.3, 1.7]) / norms
  state = {"initial_losses": jnp.asarray([2.0, 0.0]), "seen": jnp.asarray([True, False])}
  update = strategy.update({"weights": weights}, state, jnp.asarray([1.0, 5.0]),
                           jnp.asarray([8.0, 8.0]), grads, weights, jnp.asarray(7),
                           jax.random.key(0))
  target = 1.0 * (np.array([2 / 3, 4 / 3])) ** 1.5
  np.testing.assert_allclose(update.weighting_grads["weights"],
                             np.sign(np.array([0.3, 1.7]) - target) * norms, rtol=1e-6)
  np.testing.assert_allclose(update.state["initial_losses"], [2.0, 5.0])


def test_pcgrad_projects_the_weighted_task_gradients():
  """g_t = w_t ∇L_t is what the surgery sees (static weights 2 and 0.5 with a conflict). Bug
  caught: projecting the unweighted gradients."""
  strategy = weighting_from_config(weighting_config("pcgrad"))
  rng = np.random.default_rng(3)
  shared = rng.normal(size=(2, 6)).astype(np.float32)
  shared[1] = -shared[0] + 0.5 * rng.normal(size=6)
  grads = {"encoders_x": {"kernel": jnp.asarray(shared)}}
  weights, key = jnp.asarray([2.0, 0.5]), jax.random.key(4)
  found = strategy.update(None, None, None, None, grads, weights, jnp.asarray(0), key)
  expected = pcgrad_reference(np.asarray(weights)[:, None] * shared, key).sum(axis=0)
  np.testing.assert_allclose(found.model_grads["encoders_x"]["kernel"], expected, rtol=1e-5)


def _dwa_run(strategy, losses, counts, skipped=()):
  """DWA's state after steps 0, 1, ... with `losses` and `counts` (T,) per step, the steps in
  `skipped` skipped as non-finite."""
  static = jnp.ones(len(losses[0]))
  state = strategy.init_state(static)
  for step, (loss, count) in enumerate(zip(losses, counts)):
    if step in skipped:
      state = strategy.skip(state, jnp.asarray(step))
    else:
      state = strategy.update(None, state, jnp.asarray(loss), jnp.asarray(count), {}, static,
                              jnp.asarray(step), jax.random.key(0)).state
  return state, strategy.weights(None, state, static, static)


def test_dwa_adapts_only_after_two_periods():
  """Bug caught: adapting after one period (its ratio then divides by an empty period)."""
  strategy = DynamicWeightAveraging(temperature=2.0, period_steps=2)
  losses = [[4.0, 1.0]] * 2 + [[1.0, 1.0]] * 2
  counts = [[8.0, 8.0]] * 4
  np.testing.assert_allclose(_dwa_run(strategy, losses[:2], counts)[1], [1.0, 1.0])
  np.testing.assert_allclose(_dwa_run(strategy, losses[:3], counts)[1], [1.0, 1.0])
  adapted = _dwa_run(strategy, losses, counts)[1]
  ratios = np.array([1.0 / 4.0, 1.0])
  np.testing.assert_allclose(adapted, 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum(),
                             rtol=1e-6)


def test_dwa_averages_each_task_over_its_labelled_steps():
  """Two tasks with the same loss 1 in both periods, task b labelled on one step of four (loss 0
  on the others): weights 1 / 1. Bug caught: averaging over every step (measured 0.755 / 1.245
  when b's labels fall unevenly)."""
  strategy = DynamicWeightAveraging(temperature=2.0, period_steps=4)
  labelled_b = [True, False, False, False, False, True, True, False]
  losses = [[1.0, 1.0 if b else 0.0] for b in labelled_b]
  counts = [[8.0, 8.0 if b else 0.0] for b in labelled_b]
  state, weights = _dwa_run(strategy, losses, counts)
  np.testing.assert_allclose(state["previous"], [1.0, 1.0])
  np.testing.assert_allclose(weights, [1.0, 1.0], rtol=1e-6)
  # A period where b has no labelled step keeps its previous mean: ratio 1.
  unlabelled = [[1.0, 0.0]] * 4
  state, _ = _dwa_run(strategy, losses + unlabelled, counts + [[8.0, 0.0]] * 4)
  np.testing.assert_allclose(state["previous"], [1.0, 1.0])


@pytest.mark.parametrize("unlabelled_periods", [1, 2])
def test_dwa_keeps_ratio_one_for_a_task_without_two_labelled_periods(unlabelled_periods):
  """Task b has no labels in its first period(s), then the same loss as a: weights 1 / 1. Bug
  caught: its ratio L̄ / 0 taking every weight ([0, 2]), or the 0.755 / 1.245 of a period mean
  over unlabelled steps."""
  strategy = DynamicWeightAveraging(temperature=2.0, period_steps=2)
  steps = 2 * (unlabelled_periods + 2)
  labelled_b = [step >= 2 * unlabelled_periods for step in range(steps)]
  losses = [[1.0, 1.0 if b else 0.0] for b in labelled_b]
  counts = [[8.0, 8.0 if b else 0.0] for b in labelled_b]
  for end in range(2 * unlabelled_periods + 2, steps + 1):
    np.testing.assert_allclose(_dwa_run(strategy, losses[:end], counts[:end])[1], [1.0, 1.0],
                               rtol=1e-6)


def test_a_skipped_step_at_a_period_boundary_still_ends_the_period():
  """Period 1 has loss 2, period 2 loss 2 (its last step skipped), period 3 loss 1: the ratios
  are 1/2 from periods 2 and 3, not from period 3 against periods 1 and 2 merged. Bug caught:
  the skipped step's state revert, which kept period 2 open into period 3."""
  strategy = DynamicWeightAveraging(temperature=2.0, period_steps=2)
  losses = [[2.0, 2.0]] * 4 + [[1.0, 2.0]] * 2
  state, weights = _dwa_run(strategy, losses, [[8.0, 8.0]] * 6, skipped={3})
  assert int(state["periods"]) == 3
  np.testing.assert_allclose(state["before_previous"], [2.0, 2.0])
  np.testing.assert_allclose(state["previous"], [1.0, 2.0])
  # Through the train step: a non-finite batch at the boundary step still closes the period.
  state, step, batch = _features_setup("dwa")
  state = state.replace(step=99)
  broken = {**batch(0), "x": np.full((64, 8), np.nan, np.float32)}
  new, metrics = step(state, broken, jax.random.key(1))
  assert not bool(metrics["finite"]["step"])
  assert int(new.weighting_state["periods"]) == 1 and int(new.skipped_steps) == 1


def multitask_config(data_dir, weighting="fixed", total_steps=4):
  config = load_config(os.path.join(CONFIGS, "mm_shapes_multitask.py"))
  config.dataset.data_dir = data_dir
  config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=16)
  config.model.encoders.image = encoder_config("conv_pool", channels=8)
  config.model.heads.size = head_config("mlp", num_classes=1, hidden_dims=(8,))
  config.task_weighting = weighting_config(weighting, **(
      {"period_steps": 2} if weighting == "dwa" else {}))
  config.tasks.outline.output_l2 = 1e-3
  config.tasks.size.head_l1 = 1e-4
  config.batch_size, config.total_steps, config.optimizer.warmup_steps = 16, total_steps, 0
  config.log_every_steps = 2
  config.evals.validation.every_steps = config.checkpoint_every_steps = total_steps
  config.eval_batch_size = 1000
  return config


def _identity_holds(record, tolerance):
  tasks = [key[:-len("/weight")] for key in record if key.endswith("/weight")]
  terms = sum(record[f"{t}/weight"] * record[f"{t}/loss"] for t in tasks) + sum(
      value for key, value in record.items()
      if "/reg/" in key or key.startswith("reg/") or key == "weighting/penalty")
  return record["loss"] == pytest.approx(terms, rel=tolerance)


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "gradnorm", "pcgrad", "dwa"])
def test_every_weighting_trains_the_multitask_config_and_logs_every_term(data_dir, tmp_path,
                                                                         weighting):
  config = multitask_config(data_dir, weighting)
  results = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as file:
    records = [json.loads(line) for line in file]
  train = [r for r in records if r["split"] == "train"]
  assert len(train) == 2
  expected_terms = {"label/loss", "outline/loss", "size/loss", "shapes_present/loss",
                    "label/reg/head_l2", "outline/reg/confidence_penalty",
                    "outline/reg/output_l2", "size/reg/head_l2", "size/reg/head_l1",
                    "shapes_present/reg/output_l2", "reg/shared", "label/weight"}
  for record in train + [results["test"], results["validation"]]:
    assert expected_terms <= set(record), expected_terms - set(record)
    assert all(np.isfinite(v) for v in record.values() if isinstance(v, float))
    assert _identity_holds(record, 1e-6)
  for metric in ("label/accuracy", "outline/accuracy", "size/mae", "size/pearson",
                 "shapes_present/micro_f1", "shapes_present/macro_f1",
                 "shapes_present/mean_average_precision"):
    assert metric in results["test"], metric
  assert results["test"]["size/examples"] < results["test"]["label/examples"] == 2000
  with open(tmp_path / "results.json") as file:
    written = json.load(file)
  assert _identity_holds(written["test"], 1e-6)
  if weighting in ("gradnorm", "pcgrad"):
    assert "grad_cosine/label/outline" in train[0] and "size/grad_norm" in train[0]


def _independent_loss(params, state, batch, tasks, shared_weight_decay):
  """The objective written out anew: Σ_t w_t·(Σ loss / labelled count) + every regulariser."""
  outputs = state.apply_fn({"params": params}, batch, train=True,
                           rngs={"dropout": jax.random.key(0)})
  sums = objective_sums(outputs, batch, tasks)
  total = sum((task.weight * sums[t]["loss"] + sum(sums[t]["reg"].values())) / sums[t]["count"]
              for t, task in tasks.items())
  return total + sum(parameter_regularizers(params, tasks, shared_weight_decay).values())


def test_the_logged_loss_is_the_objective_the_step_differentiates(data_dir):
  config = multitask_config(data_dir)
  readers, tasks, _, state = loop._setup(config)[:4]
  batch = readers["train"].read(np.arange(16))
  batch["size_mask"][:5] = False
  new, metrics = jax.jit(functools.partial(
      train_step, tasks=tasks, schedule=lambda count: 1.0,
      shared_weight_decay=config.shared_weight_decay))(state, batch, jax.random.key(0))
  loss, grads = jax.value_and_grad(_independent_loss)(state.params, state, batch, tasks,
                                                      config.shared_weight_decay)
  assert float(metrics["values"]["loss"]) == pytest.approx(float(loss), rel=1e-6)
  assert float(metrics["values"]["grad_norm"]) == pytest.approx(
      float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))), rel=1e-5)


def contrastive_config(data_dir, arg, total_steps=40):
  config = load_config(os.path.join(CONFIGS, "contrastive_probe.py"), arg)
  config.dataset.data_dir = data_dir
  config.batch_size, config.total_steps = 64, total_steps
  config.log_every_steps = config.evals.validation.every_steps = config.checkpoint_every_steps = total_steps
  return config


@pytest.fixture(scope="module")
def redundancy_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds_redundancy"))
  data.prepare("interactions/redundancy", directory)
  return directory


@pytest.mark.parametrize("weighting", ["pcgrad", "gradnorm"])
def test_resume_is_exact_with_keyed_pcgrad_orders_and_gradnorm_state(redundancy_dir, tmp_path,
                                                                      weighting):
  """A SigLIP task and a classification task (small MLP encoders): stopping after step 2 and
  resuming ends with the parameters and weighting state of the uninterrupted run."""
  config = contrastive_config(redundancy_dir, "pretrain,siglip", total_steps=4)
  config.model.heads.label = head_config("linear", num_classes=2)
  config.tasks.label = task_config("classification")
  config.task_weighting = weighting_config(weighting)
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  loop.train_and_evaluate(config, straight)
  loop.train_and_evaluate(config, split, stop_after_step=2)
  loop.train_and_evaluate(config, split)
  a, b = (loop.restore_checkpoint(config, workdir).state for workdir in (straight, split))
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path((a.params, a.weighting_state)),
                          jax.tree.leaves((b.params, b.weighting_state))):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_contrastive_pretraining_aligns_the_shared_bit(redundancy_dir, tmp_path, loss):
  """The modalities share one bit r: knowing it, the best InfoNCE loss over 1,000 candidates is
  log(#candidates with the same r) ≈ log 500 = 6.21, against log 1000 = 6.91 for chance; SigLIP
  must fall below its value at initialisation. (A SigLIP loss sums over the candidates, so it is
  compared at the training batch size.)"""
  config = contrastive_config(redundancy_dir, f"pretrain,{loss}", total_steps=150)
  if loss == "siglip":
    config.eval_batch_size = config.batch_size
  results = loop.train_and_evaluate(config, str(tmp_path))
  test = results["test"]
  assert {"contrastive/a_to_b/R@1", "contrastive/b_to_a/R@10"} <= set(test)
  if loss == "infonce":
    assert test["contrastive/loss"] < 6.4, test
  else:
    initial = contrastive_config(redundancy_dir, f"pretrain,{loss}", total_steps=1)
    initial.eval_batch_size = config.eval_batch_size
    start = loop.train_and_evaluate(initial, str(tmp_path / "start"))["test"]["contrastive/loss"]
    assert test["contrastive/loss"] < 0.9 * start, (test, start)


def test_contrastive_and_supervised_tasks_train_together(redundancy_dir, tmp_path):
  config = contrastive_config(redundancy_dir, "pretrain,siglip", total_steps=4)
  config.model.heads.label = head_config("linear", num_classes=2)
  config.tasks.label = task_config("classification", weight=0.5)
  results = loop.train_and_evaluate(config, str(tmp_path))["test"]
  assert results["loss"] == pytest.approx(results["contrastive/loss"]
                                          + 0.5 * results["label/loss"], rel=1e-6)


def test_linear_probe_copies_and_freezes_the_pretrained_encoders(redundancy_dir, tmp_path):
  pretrain = contrastive_config(redundancy_dir, "pretrain,infonce", total_steps=5)
  loop.train_and_evaluate(pretrain, str(tmp_path / "pre"))
  probe = contrastive_config(redundancy_dir, "probe", total_steps=5)
  probe.init_from = str(tmp_path / "pre")
  loop.train_and_evaluate(probe, str(tmp_path / "probe"))
  pre = loop.restore_checkpoint(pretrain, str(tmp_path / "pre")).state
  initial = loop._setup(contrastive_config(redundancy_dir, "probe", total_steps=5)).state
  probed = loop.restore_checkpoint(probe, str(tmp_path / "probe")).state
  for modality in ("encoders_a", "encoders_b"):
    for x, y in zip(jax.tree.leaves(pre.params[modality]), jax.tree.leaves(probed.params[modality])):
      np.testing.assert_array_equal(x, y)
  assert any(np.any(np.asarray(x) != np.asarray(y)) for x, y in zip(
      jax.tree.leaves(initial.params["heads_label"]), jax.tree.leaves(probed.params["heads_label"])))


def test_init_from_a_workdir_without_checkpoints_is_one_line(redundancy_dir, tmp_path):
  probe = contrastive_config(redundancy_dir, "probe", total_steps=2)
  probe.init_from = str(tmp_path / "nothing")
  with pytest.raises(loop.ConfigError, match="holds no checkpoint"):
    loop.train_and_evaluate(probe, str(tmp_path / "probe"))
