"""The one pure train step and eval step. Drivers (`mmjax/train/parallel.py`: jit with named
shardings on one or many devices and hosts, or the explicit per-device form under `shard_map`)
wrap these with `functools.partial(..., tasks=..., schedule=...)` and never fork them."""
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mmjax.tasks.objective import Task, example_count, means_from_sums, multitask_objective
from mmjax.train.state import TrainState

Array = jax.Array
Batch = Mapping[str, Array]


def _micro_batches(batch: Batch, count: int) -> Batch:
  """`(B, ...)` -> `(count, B / count, ...)`: micro-batch j holds rows j, j + count, ..., so when
  the batch is split over devices in contiguous blocks, every micro-batch stays split evenly."""
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def train_step(state: TrainState, batch: Batch, rng: Array, *, tasks: Mapping[str, Task],
               schedule: optax.Schedule, axis_name: Optional[str] = None,
               grad_accum_steps: int = 1, ema_decay: float = 0.0
               ) -> Tuple[TrainState, Dict[str, Array]]:
  """One optimizer step on the mean loss over the batch's real examples.

  `rng` is the run's base key: the step folds in its own step number, so a resumed run draws the
  same dropout masks as an uninterrupted one. The loss differentiated is the batch's summed loss
  divided by the global example count (known before the forward pass), accumulated over
  `grad_accum_steps` equal micro-batches (a `lax.scan`; the same update as one step on the whole
  batch, each micro-batch drawing its own dropout masks) and, under a per-device driver, summed
  over `axis_name` with `lax.psum`: the update is the global batch's whatever its split.
  `ema_decay` > 0 keeps ema ← d_t·ema + (1 − d_t)·params in `state.ema_params`, with the usual
  warm-up d_t = min(ema_decay, (1 + t) / (10 + t)) at step t, so that the initial parameters do
  not linger in the average (with d = 0.999, 0.999^1000 ≈ 37% of them would after 1,000 steps).

  Returns the new state and metric sums over the batch (see `multitask_objective`) plus the
  gradient's global norm and the learning rate used.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:   # per-device slices draw independent masks
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))

  count = example_count(batch)
  if axis_name is not None:
    count = jax.lax.psum(count, axis_name)

  def mean_loss_share(params, micro_batch, key):
    outputs = state.apply_fn({"params": params}, micro_batch, train=True, rngs={"dropout": key})
    sums = multitask_objective(outputs, micro_batch, tasks)[1]
    return sums["loss"] / jnp.maximum(count, 1), sums

  grad_fn = jax.grad(mean_loss_share, has_aux=True)
  if grad_accum_steps == 1:
    grads, sums = grad_fn(state.params, batch, dropout_rng)
  else:
    def accumulate(carry, inputs):
      index, micro_batch = inputs
      grads, sums = grad_fn(state.params, micro_batch, jax.random.fold_in(dropout_rng, index))
      return jax.tree.map(jnp.add, carry, (grads, sums)), None

    micro = _micro_batches(batch, grad_accum_steps)
    first = grad_fn(state.params, jax.tree.map(lambda x: x[0], micro),
                    jax.random.fold_in(dropout_rng, 0))
    (grads, sums), _ = jax.lax.scan(accumulate, first, (jnp.arange(1, grad_accum_steps),
                                                        jax.tree.map(lambda x: x[1:], micro)))
  if axis_name is not None:
    grads, sums = jax.lax.psum((grads, sums), axis_name)
  metrics = {**sums, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
  new_state = state.apply_gradients(grads=grads)
  if ema_decay > 0:
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    new_state = new_state.replace(ema_params=jax.tree.map(
        lambda ema, p: decay * ema + (1 - decay) * p, state.ema_params, new_state.params))
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, tasks: Mapping[str, Task],
              axis_name: Optional[str] = None) -> Dict[str, Array]:
  """Metric sums over the batch (over all devices of `axis_name`); examples with
  `batch['weight'] == 0` are padding and count nowhere. Uses the EMA parameters when kept."""
  params = state.params if state.ema_params is None else state.ema_params
  outputs = state.apply_fn({"params": params}, batch, train=False)
  sums = multitask_objective(outputs, batch, tasks)[1]
  return sums if axis_name is None else jax.lax.psum(sums, axis_name)


def evaluate(eval_fn: Any, state: TrainState, batches) -> Dict[str, float]:
  """Runs `eval_fn(state, batch)` over `batches` and returns exact means over all real examples,
  and their number as `examples`."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.device_get(totals)
  return {**means_from_sums(totals), "examples": int(round(float(totals["count"])))}
