"""The multi-task objective: L = Σ_t w_t · L_t(outputs_t, labels_t), with per-task metric sums.

Metrics are returned as sums plus the example count so that evaluation over many batches (with
padded examples weighted 0) aggregates exactly: mean = Σ sums / Σ count.
"""
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from mmjax import registry
from mmjax.tasks.losses import LOSSES

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  """One supervised task: which label it reads, its loss and its weight in the total."""
  loss: Callable[..., Array]
  label_key: str
  weight: float = 1.0


def tasks_from_config(tasks_config: Mapping[str, Mapping[str, Any]]) -> Dict[str, Task]:
  """`{task: {loss: name, weight: w, label_key: key}}` -> `{task: Task}` (label_key defaults to task)."""
  tasks = {}
  for name, spec in tasks_config.items():
    loss = registry.lookup(LOSSES, spec.get("loss", "softmax_cross_entropy"), "loss")
    tasks[name] = Task(loss=loss, label_key=spec.get("label_key", name),
                       weight=float(spec.get("weight", 1.0)))
  return tasks


def example_count(batch: Mapping[str, Array]) -> Array:
  """How many real examples the batch holds: Σ weight, or its size when it has no weights."""
  weights: Optional[Array] = batch.get("weight")
  if weights is not None:
    return weights.sum()
  return jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)


def multitask_objective(outputs: Mapping[str, Array], batch: Mapping[str, Array],
                        tasks: Mapping[str, Task]) -> Tuple[Array, Dict[str, Array]]:
  """Returns (weighted mean loss, metric sums). Examples with `batch['weight'] == 0` count nowhere."""
  weights: Optional[Array] = batch.get("weight")
  count = example_count(batch)
  weighted_sum = jnp.zeros((), jnp.float32)
  sums = {"count": count}
  for name, task in tasks.items():
    logits, labels = outputs[name], batch[task.label_key]
    loss_sum = task.loss(logits, labels, weights, reduction="sum")
    weighted_sum = weighted_sum + task.weight * loss_sum
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    if weights is not None:
      correct = correct * weights
    sums[f"{name}/loss"] = loss_sum
    sums[f"{name}/accuracy"] = correct.sum()
  sums["loss"] = weighted_sum
  return weighted_sum / jnp.maximum(count, 1), sums


def means_from_sums(sums: Mapping[str, Any]) -> Dict[str, float]:
  """Divides every metric sum by the example count."""
  count = float(sums["count"])
  return {key: float(value) / max(count, 1.0) for key, value in sums.items() if key != "count"}
