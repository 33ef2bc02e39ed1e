"""The one pure train step and eval step. Drivers (jit on one device, sharded jit, pmap, multi-host)
wrap these with `functools.partial(..., tasks=..., schedule=...)` and never fork them."""
from typing import Any, Dict, Mapping, Tuple

import jax
import optax

from mmjax.tasks.objective import Task, means_from_sums, multitask_objective
from mmjax.train.state import TrainState

Array = jax.Array
Batch = Mapping[str, Array]


def train_step(state: TrainState, batch: Batch, rng: Array, *, tasks: Mapping[str, Task],
               schedule: optax.Schedule) -> Tuple[TrainState, Dict[str, Array]]:
  """One optimizer step. `rng` is the run's base key: the step folds in its own step number, so
  a resumed run draws the same dropout masks as an uninterrupted one.

  Returns the new state and metric sums over the batch (see `multitask_objective`) plus the
  gradient's global norm and the learning rate used.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs = state.apply_fn({"params": params}, batch, train=True, rngs={"dropout": dropout_rng})
    return multitask_objective(outputs, batch, tasks)

  (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {**sums, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
  return state.apply_gradients(grads=grads), metrics


def eval_step(state: TrainState, batch: Batch, *, tasks: Mapping[str, Task]) -> Dict[str, Array]:
  """Metric sums over the batch; examples with `batch['weight'] == 0` are padding and count nowhere."""
  outputs = state.apply_fn({"params": state.params}, batch, train=False)
  return multitask_objective(outputs, batch, tasks)[1]


def evaluate(eval_fn: Any, state: TrainState, batches) -> Dict[str, float]:
  """Runs `eval_fn(state, batch)` over `batches` and returns exact means over all real examples,
  and their number as `examples`."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.device_get(totals)
  return {**means_from_sums(totals), "examples": int(round(float(totals["count"])))}
