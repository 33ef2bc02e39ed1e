"""The pure train step's options: gradient accumulation is the update of one k× batch, the EMA
follows its recurrence and is what evaluation uses (its exact resume: test_train.py), and bfloat16 compute keeps
float32 parameters, logits and losses."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import data
from mmjax.model import encoder_config, head_config, model_from_config
from mmjax.tasks.objective import task_config, tasks_from_config
from mmjax.train.defaults import load_config
from mmjax.train.state import create_train_state, make_optimizer
from mmjax.train.step import eval_step, train_step

from config_helpers import REPO, seed_config


def small_config(data_dir, dtype="float32"):
  config = seed_config(data_dir)
  config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=16)
  config.model.encoders.image = encoder_config("conv_pool", channels=8)
  config.model.dtype = dtype
  config.batch_size, config.total_steps, config.optimizer.warmup_steps = 16, 4, 0
  config.log_every_steps = config.evals.validation.every_steps = config.checkpoint_every_steps = 2
  config.eval_batch_size = 1000
  return config


def setup(config, data_dir, ema=False):
  builder = data.prepare("mm_shapes", data_dir)
  reader = data.ExampleReader(builder, "train", cache="memory")
  batch = reader.read(np.arange(config.batch_size))
  model = model_from_config(config.model, config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  state = create_train_state(model, tx, batch, jax.random.key(0), ema=ema)
  return state, batch, functools.partial(train_step, tasks=tasks_from_config(config.tasks),
                                         schedule=schedule)


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_gradient_accumulation_gives_the_update_of_the_whole_batch(data_dir, micro_batches):
  """The seed model has no dropout, so k micro-batches of B/k must reproduce one step on B."""
  state, batch, step = setup(small_config(data_dir), data_dir)
  whole, whole_metrics = jax.jit(step)(state, batch, jax.random.key(1))
  assert float(whole_metrics["values"]["learning_rate"]) > 0   # the step moves the parameters
  accumulated, metrics = jax.jit(functools.partial(step, grad_accum_steps=micro_batches))(
      state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(whole.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("loss", "label/loss", "grad_norm"):
    assert float(metrics["values"][key]) == pytest.approx(
        float(whole_metrics["values"][key]), rel=1e-5), key
  for found, expected in zip(jax.tree.leaves(metrics["sums"]),
                             jax.tree.leaves(whole_metrics["sums"])):
    np.testing.assert_allclose(found, expected, rtol=1e-5)


def test_accumulation_keeps_every_negative_of_the_whole_batch(data_dir):
  """A CLIP and a SigLIP task beside the classification task: 4 micro-batches give the whole
  batch's update and metric sums, every example a negative of every other (with each
  micro-batch's negatives only, the contrastive losses of B/4 rows differ and so does the
  update: measured, the test fails). With Adam's ε = 1 its first step is lr·g/(|g| + 1), nearly
  linear in the gradient g: the comparison is of the gradients, not of Adam's normalisation
  g/|g| of entries near 0, which turns float32 summation order into differences of up to lr."""
  micro_batches = 4
  config = small_config(data_dir)
  config.optimizer.eps, config.optimizer.learning_rate = 1.0, 0.1
  for name, loss in (("clip", "infonce"), ("pair", "siglip")):
    config.model.heads[name] = head_config("contrastive", modalities=("text", "image"),
                                           embed_dim=8)
    config.tasks[name] = task_config("contrastive", loss=loss, chunk_size=3)
  state, batch, step = setup(config, data_dir)
  whole, whole_metrics = jax.jit(step)(state, batch, jax.random.key(1))
  accumulated, metrics = jax.jit(functools.partial(step, grad_accum_steps=micro_batches))(
      state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(whole.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("loss", "clip/loss", "pair/loss", "label/loss", "grad_norm"):
    assert float(metrics["values"][key]) == pytest.approx(
        float(whole_metrics["values"][key]), rel=1e-5), key
  assert jax.tree.structure(metrics["sums"]) == jax.tree.structure(whole_metrics["sums"])
  for found, expected in zip(jax.tree.leaves(metrics["sums"]),
                             jax.tree.leaves(whole_metrics["sums"])):
    np.testing.assert_allclose(found, expected, rtol=1e-5)
  # The contrastive heads' projections and scales move: the test is not vacuous.
  for head in ("heads_clip", "heads_pair"):
    trained, start = whole.params[head], state.params[head]
    moved = {k: float(jnp.max(jnp.abs(jnp.asarray(jax.tree.leaves(trained[k])[0])
                                      - jax.tree.leaves(start[k])[0])))
             for k in ("log_scale", "project_text", "project_image")}
    assert min(moved.values()) > 1e-4, (head, moved)


def test_ema_follows_its_recurrence_and_is_what_evaluation_uses(data_dir):
  config = small_config(data_dir)
  state, batch, step = setup(config, data_dir, ema=True)
  steps = jax.jit(functools.partial(step, ema_decay=0.9))
  for t in (0, 50):   # warm-up: d_t = min(0.9, (1 + t) / (10 + t)) = 0.1, then 0.9
    decay = min(0.9, (1 + t) / (10 + t))
    start = state.replace(step=t)
    new, _ = steps(start, batch, jax.random.key(1))
    for ema, before, after in zip(*(jax.tree.leaves(x) for x in
                                    (new.ema_params, start.ema_params, new.params))):
      np.testing.assert_allclose(ema, decay * before + (1 - decay) * after, rtol=1e-5, atol=1e-7)
  assert any(np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(new.params)))
  tasks = tasks_from_config(config.tasks)
  with_ema = eval_step(new, batch, tasks=tasks)
  plain = eval_step(new.replace(params=new.ema_params, ema_params=None), batch, tasks=tasks)
  assert float(with_ema["sums"]["label"]["loss"]) == float(plain["sums"]["label"]["loss"])


def test_bfloat16_computes_in_bfloat16_with_float32_parameters_logits_and_loss(data_dir):
  state, batch, step = setup(small_config(data_dir, "bfloat16"), data_dir)
  reference, _, _ = setup(small_config(data_dir, "float32"), data_dir)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  outputs, intermediates = state.apply_fn({"params": state.params}, batch,
                                          capture_intermediates=True,
                                          mutable=["intermediates"])
  fused = intermediates["intermediates"]["fusion"]["__call__"][0]
  assert fused.dtype == jnp.bfloat16 and outputs["label"].dtype == jnp.float32
  new, metrics = jax.jit(step)(state, batch, jax.random.key(1))
  _, reference_metrics = jax.jit(step)(reference, batch, jax.random.key(1))
  assert metrics["values"]["loss"].dtype == jnp.float32
  assert float(metrics["values"]["loss"]) == pytest.approx(
      float(reference_metrics["values"]["loss"]), rel=2e-2)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))


def multitask_setup(data_dir):
  """The mm_shapes multi-task model (four heads) on one batch, with its jitted step."""
  config = load_config(os.path.join(REPO, "experiments", "configs", "mm_shapes_multitask.py"))
  config.dataset.data_dir = data_dir
  config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=16)
  config.model.encoders.image = encoder_config("conv_pool", channels=8)
  config.batch_size, config.optimizer.warmup_steps = 16, 0
  state, batch, _ = setup(config, data_dir)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  step = jax.jit(functools.partial(train_step, tasks=tasks_from_config(config.tasks),
                                   schedule=schedule))
  return state, batch, step, list(config.tasks)


def test_a_non_finite_step_changes_nothing_but_the_counters_and_names_the_task(data_dir):
  """A NaN regression target (labelled) makes the 'size' loss, the shared gradients and the size
  head's gradients NaN, and nothing else: the step applies nothing (params, optimizer moments,
  weighting state unchanged), counts itself, and says which task and groups; the next finite
  step proceeds as from the untouched state (bug caught: the guard applied after
  `apply_gradients` but on the wrong tree, leaving Adam's moments NaN)."""
  state, batch, step, names = multitask_setup(data_dir)
  assert int(state.skipped_steps) == 0
  poisoned = dict(batch, size=np.asarray(batch["size"]).copy())
  poisoned["size"][3] = np.nan
  after, metrics = step(state, poisoned, jax.random.key(1))
  finite = jax.device_get(metrics["finite"])
  assert not finite["step"]
  assert dict(zip(names, finite["tasks"].tolist())) == {
      "label": True, "outline": True, "size": False, "shapes_present": True}
  assert {g: bool(v) for g, v in finite["groups"].items()} == {
      "encoders_text": False, "encoders_image": False, "heads_label": True,
      "heads_outline": True, "heads_size": False, "heads_shapes_present": True}
  assert int(after.step) == int(state.step) + 1 and int(after.skipped_steps) == 1
  for name in ("params", "opt_state"):
    for a, b in zip(jax.tree.leaves(getattr(after, name)), jax.tree.leaves(getattr(state, name))):
      np.testing.assert_array_equal(a, b)
  # The next step on a clean batch is the clean step of the untouched state at that step number.
  resumed, clean_metrics = step(after, batch, jax.random.key(1))
  reference, _ = step(state.replace(step=after.step), batch, jax.random.key(1))
  assert bool(clean_metrics["finite"]["step"]) and int(resumed.skipped_steps) == 1
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(reference.params)):
    np.testing.assert_array_equal(a, b)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(resumed.params))


def test_a_finite_loss_with_non_finite_gradients_is_skipped_too(data_dir):
  """A NaN image reaches the loss of the seed model's max-pooled image encoder as a finite
  number but its gradients as NaN: the step is skipped on the gradients alone and names the
  image encoder (bug caught: combining the groups' flags with a NaN test of booleans, always
  true)."""
  state, batch, step = setup(small_config(data_dir), data_dir)
  poisoned = dict(batch, image=np.full_like(batch["image"], np.nan))
  after, metrics = jax.jit(step)(state, poisoned, jax.random.key(1))
  finite = jax.device_get(metrics["finite"])
  assert np.isfinite(float(metrics["values"]["loss"])) and not finite["step"]
  assert not finite["groups"]["encoders_image"] and finite["tasks"].all()
  for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_each_accumulated_micro_batch_draws_its_own_dropout_masks(data_dir):
  """With dropout on and k = 4 micro-batches that are all the same rows (B copies of one
  example, so however the batch is split every micro-batch is alike), micro-batch j draws its
  masks from the step key folded with j: the accumulated loss, gradient and update are those of
  the sum of the k micro-batches' shares of the loss under those k keys, computed here by hand;
  the k shares differ, so a step drawing one key for every micro-batch (one micro-batch's share,
  k times) fails (bug caught: every micro-batch reusing the same dropout key)."""
  config = small_config(data_dir)
  del config.model.encoders["text"]   # an image-only model compiles in seconds
  config.model.heads.label = head_config("mlp", num_classes=9, hidden_dims=(32,),
                                         dropout_rate=0.5)
  k = 4
  state, batch, step = setup(config, data_dir)
  batch = {key: np.repeat(np.asarray(value)[:1], config.batch_size, axis=0)
           for key, value in batch.items()}
  micro = {key: value[:config.batch_size // k] for key, value in batch.items()}
  rng = jax.random.key(1)
  state = state.replace(step=3)
  new, metrics = jax.jit(functools.partial(step, grad_accum_steps=k))(state, batch, rng)
  step_key = jax.random.fold_in(rng, state.step)

  def micro_loss(params, key):   # this micro-batch's share of the batch's mean loss
    logits = state.apply_fn({"params": params}, micro, train=True, rngs={"dropout": key})["label"]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, micro["label"]).sum() / config.batch_size

  share_and_grad = jax.jit(jax.value_and_grad(micro_loss))
  shares, grads = zip(*(share_and_grad(state.params, jax.random.fold_in(step_key, j))
                        for j in range(k)))
  shares = [float(share) for share in shares]
  expected_loss = sum(shares)
  # Dropout is on: each key gives other masks, so no single micro-batch's share, k times, is
  # the loss.
  assert all(abs(k * share - expected_loss) > 1e-3 * expected_loss for share in shares), shares
  assert float(metrics["values"]["label/loss"]) == pytest.approx(expected_loss, rel=1e-5)
  expected_grads = jax.tree.map(lambda *g: sum(g), *grads)
  assert float(metrics["values"]["grad_norm"]) == pytest.approx(
      float(optax.tree.norm(expected_grads)), rel=1e-4)
  expected = jax.jit(lambda s, g: s.apply_gradients(grads=g).params)(state, expected_grads)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(new.params),
                          jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
