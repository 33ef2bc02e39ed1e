"""The multi-task objective, term by term:

    L = Σ_t w_t · L_t  +  Σ_t Σ_k R_t,k  (+ R_shared)  (+ the weighting's own penalty, if any)

- L_t, logged as `<task>/loss`: the mean of task t's per-example loss over its labelled examples
  (`mmjax/tasks/kinds.py`); w_t, logged as `<task>/weight`: its weight (`config.tasks.<t>.weight`,
  or learned: `config.task_weighting`, `mmjax/tasks/weighting.py`);
- R_t,k, logged as `<task>/reg/<k>`, coefficient included: task t's regularisers on its head's
  parameters (`head_l2`, `head_l1`) and outputs (`output_l2`, `confidence_penalty`);
- R_shared, logged as `reg/shared`: ½λ‖θ_shared‖² on every parameter outside the heads
  (`config.shared_weight_decay`); AdamW's decoupled `config.optimizer.weight_decay` is separate
  and not a term of L;
- the uncertainty weighting's Σ_t ½ log σ_t², logged as `weighting/penalty`.

So for fixed task weights, `loss = Σ_t weight_t · <task>/loss + Σ <task>/reg/<k> + reg/shared` in
every train line of metrics.jsonl (averages over the steps of the line) and in results.json
(exact means over each split).

Data terms are carried as sums over examples plus counts (`objective_sums`), so that they add up
exactly over micro-batches, devices and (padded) evaluation batches; metrics that are not means
(F1, Pearson's r, average precision) are computed from sufficient statistics (`task_metrics`).
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections

from mmjax import registry
from mmjax.modalities import present
from mmjax.tasks.kinds import TASK_KINDS, TaskKind, check_task

Array = jax.Array
HEAD_PREFIX = "heads_"   # the model's parameters of task t's head live under `heads_<t>`


def task_config(kind: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of a task of `kind` with every field (`fields` or the defaults)."""
  return registry.spec(TASK_KINDS, kind, "task kind", **fields)


def tasks_from_config(tasks_config: Mapping[str, Mapping[str, Any]]) -> Dict[str, TaskKind]:
  """`{task: {name: kind, **fields}}` -> `{task: TaskKind}` (label_key defaults to the task)."""
  tasks = {}
  for name, spec in tasks_config.items():
    task = registry.build(TASK_KINDS, spec, "task kind")
    if task.label_key is None:
      task = dataclasses.replace(task, label_key=name)
    check_task(name, task)
    tasks[name] = task
  return tasks


def example_count(batch: Mapping[str, Array]) -> Array:
  """How many real examples the batch holds: Σ weight, or its size when it has no weights."""
  weights: Optional[Array] = batch.get("weight")
  if weights is not None:
    return weights.sum()
  return jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)


def _example_weights(batch: Mapping[str, Array]) -> Array:
  weights = batch.get("weight")
  if weights is None:
    return jnp.ones(jax.tree.leaves(batch)[0].shape[0], jnp.float32)
  return weights.astype(jnp.float32)


def labelled_weights(batch: Mapping[str, Array], task: TaskKind) -> Array:
  """`(B,)`: the example's weight (0 for padding) times whether it carries task's label
  (`batch[label_key + '_mask']`, all True when absent) and, for a task with a `modality`,
  whether it has that modality."""
  weights = _example_weights(batch)
  mask = batch.get(f"{task.label_key}_mask") if task.uses_labels else None
  if mask is not None:
    weights = jnp.where(mask, weights, 0.0)
  if task.modality is not None:
    weights = jnp.where(present(batch, task.modality), weights, 0.0)
  return weights


def label_counts(batch: Mapping[str, Array], tasks: Mapping[str, TaskKind]) -> Dict[str, Array]:
  """`{task: number of labelled real examples}` (known before the forward pass)."""
  return {name: labelled_weights(batch, task).sum() for name, task in tasks.items()}


def _zero_rows(values: Array, keep: Array) -> Array:
  """`values` with the rows where `keep` is False replaced by zeros."""
  return jnp.where(keep.reshape(keep.shape + (1,) * (values.ndim - 1)), values,
                   jnp.zeros_like(values))


def objective_sums(outputs: Mapping[str, Any], batch: Mapping[str, Array],
                   tasks: Mapping[str, TaskKind],
                   axis_name: Optional[str] = None) -> Dict[str, Any]:
  """This device's sums: `{"count": real examples, task: {"count": labelled examples, "loss":
  Σ loss, "reg": {k: Σ R_k}, "stats": metric sufficient statistics}}`. Unlabelled and padding
  examples add nothing to any of them, nor to their gradients. `axis_name` lets a contrastive
  task gather the other devices' embeddings as negatives."""
  sums: Dict[str, Any] = {"count": example_count(batch)}
  for name, task in tasks.items():
    output, weights = outputs[name], labelled_weights(batch, task)
    if not task.uses_labels:
      sums[name] = {"count": weights.sum(), "loss": task.loss_sum(output, weights, axis_name),
                    "reg": {}, "stats": task.retrieval_sums(output, weights, axis_name)}
      continue
    # Unlabelled and padding rows are zeroed before any arithmetic: a NaN label or output there
    # reaches neither a sum nor a gradient (where's other branch gets a zero cotangent).
    labelled = weights > 0
    labels, output = (_zero_rows(batch[task.label_key], labelled), _zero_rows(output, labelled))
    sums[name] = {
        "count": weights.sum(),
        "loss": jnp.sum(weights * task.example_losses(output, labels)),
        "reg": {k: jnp.sum(weights * v) for k, v in task.output_regularizers(output).items()},
        "stats": task.metric_sums(output, labels, weights),
    }
  return sums


def task_predictions(outputs: Mapping[str, Any],
                     tasks: Mapping[str, TaskKind]) -> Dict[str, Any]:
  """`{task: task.predictions(its head's outputs)}` (probabilities, scores, values, embeddings)."""
  return {name: task.predictions(outputs[name]) for name, task in tasks.items()}


def _squared_norm(tree: Any) -> Array:
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def parameter_path(path: Any) -> str:
  """A parameter's key path as `encoders_text/lstm_0/recurrent_kernel`: the names that config
  regexes (`optimizer.frozen`, GradNorm's `layer`) match."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def is_shared(top_level_name: str) -> bool:
  """Whether a top-level parameter collection is shared by the tasks (encoders, fusion) rather
  than one task's head or the task weighting's own parameters."""
  return not top_level_name.startswith(HEAD_PREFIX) and top_level_name != "task_weighting"


def parameter_regularizers(params: Mapping[str, Any], tasks: Mapping[str, TaskKind],
                           shared_weight_decay: float = 0.0) -> Dict[str, Array]:
  """The regularisers on parameters that are on, coefficient included: `<task>/reg/head_l2` =
  λ·½‖θ_t‖², `<task>/reg/head_l1` = λ·‖θ_t‖₁ over every parameter of task t's head, and
  `reg/shared` = λ·½‖θ_shared‖²."""
  terms = {}
  for name, task in tasks.items():
    head = params[HEAD_PREFIX + name]
    if task.head_l2:
      terms[f"{name}/reg/head_l2"] = task.head_l2 * 0.5 * _squared_norm(head)
    if task.head_l1:
      terms[f"{name}/reg/head_l1"] = task.head_l1 * sum(
          jnp.sum(jnp.abs(x.astype(jnp.float32))) for x in jax.tree.leaves(head))
  if shared_weight_decay:
    shared = {k: v for k, v in params.items() if is_shared(k)}
    terms["reg/shared"] = shared_weight_decay * 0.5 * _squared_norm(shared)
  return terms


def task_metrics(sums: Mapping[str, Any], tasks: Mapping[str, TaskKind]) -> Dict[str, float]:
  """Each task's metrics (`<task>/accuracy`, `<task>/micro_f1`, ...) from summed statistics, and
  how many labelled examples they cover (`<task>/examples`)."""
  metrics = {}
  for name, task in tasks.items():
    count = float(sums[name]["count"])
    metrics[f"{name}/examples"] = int(round(count))
    metrics.update({f"{name}/{k}": v for k, v in task.metrics(sums[name]["stats"], count).items()})
  return metrics


def data_terms(sums: Mapping[str, Any], tasks: Mapping[str, TaskKind]) -> Dict[str, float]:
  """`<task>/loss` and `<task>/reg/<k>` (output regularisers) as means over labelled examples."""
  terms = {}
  for name in tasks:
    count = max(float(sums[name]["count"]), 1.0)
    terms[f"{name}/loss"] = float(sums[name]["loss"]) / count
    terms.update({f"{name}/reg/{k}": float(v) / count for k, v in sums[name]["reg"].items()})
  return terms


def total_loss(terms: Mapping[str, float], tasks: Mapping[str, TaskKind]) -> float:
  """Σ_t `<task>/weight`·`<task>/loss` + every regulariser + `weighting/penalty` (of floats, or
  of arrays inside the step)."""
  weighted = sum(terms[f"{t}/weight"] * terms[f"{t}/loss"] for t in tasks)
  extra = sum(v for k, v in terms.items()
              if "/reg/" in k or k.startswith("reg/") or k == "weighting/penalty")
  return weighted + extra
