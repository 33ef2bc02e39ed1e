"""The one pure train step and eval step. Drivers (`mmjax/train/parallel.py`: jit with named
shardings on one or many devices and hosts, or the explicit per-device form under `shard_map`)
wrap these with `functools.partial(..., tasks=..., schedule=...)` and never fork them."""
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mmjax.balancing import NoBalancing
from mmjax.modalities import ModalityDropout
from mmjax.model import ENCODER_PREFIX
from mmjax.tasks.kinds import Contrastive, TaskKind
from mmjax.tasks.objective import (data_terms, label_counts, objective_sums,
                                   parameter_regularizers, task_metrics, total_loss)
from mmjax.tasks.weighting import Fixed, gradient_metrics, shared_matrix
from mmjax.train.state import TrainState, evaluation_params, parameter_labels

Array = jax.Array
Batch = Mapping[str, Array]


def _micro_batches(batch: Batch, count: int) -> Batch:
  """`(B, ...)` -> `(count, B / count, ...)`: micro-batch j holds rows j, j + count, ..., so when
  the batch is split over devices in contiguous blocks, every micro-batch stays split evenly."""
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def _cached_contrastive_cotangents(state: TrainState, batch: Batch, micro: Batch,
                                   micro_keys: Array, contrastive: Mapping[str, TaskKind],
                                   counts: Mapping[str, Array], axis_name: Optional[str]):
  """The feature cache of accumulation for the `contrastive` tasks (GradCache, Gao et al. 2021,
  "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"): every micro-batch
  is embedded without gradients (with its own dropout key, as its gradient pass will be), each
  task's loss over the whole batch is differentiated w.r.t. its outputs (embeddings, log-scale,
  bias) once, and the gradient is cut back into micro-batches. Returns (per micro-batch
  `{task: {output: cotangent}}` stacked on a leading axis, the tasks' metric sums over the whole
  batch); the log-scale's and bias's cotangents are split evenly over the micro-batches, whose
  forward passes each compute them."""
  if not contrastive:
    return {}, {}
  count = jax.tree.leaves(micro)[0].shape[0]
  embed = lambda inputs: {t: state.apply_fn({"params": state.params}, inputs[0], train=True,
                                            rngs={"dropout": inputs[1]})[t] for t in contrastive}
  per_micro = jax.lax.map(embed, (micro, micro_keys))
  whole = jax.tree.map(lambda x: x[0] if x.ndim == 1 else _whole_batch(x), per_micro)

  def loss(outputs):
    sums = objective_sums(outputs, batch, contrastive, axis_name)
    return sum(sums[t]["loss"] / jnp.maximum(counts[t], 1) for t in contrastive), sums

  cotangents, sums = jax.grad(loss, has_aux=True)(whole)
  cotangents = jax.tree.map(
      lambda g: jnp.broadcast_to(g / count, (count,)) if g.ndim == 0 else
      _micro_batches(g, count), cotangents)
  return cotangents, {t: sums[t] for t in contrastive}


def _whole_batch(micro: Array) -> Array:
  """The inverse of `_micro_batches`: `(count, B / count, ...)` -> `(B, ...)` in batch order."""
  return micro.swapaxes(0, 1).reshape(-1, *micro.shape[2:])


def task_weight_vectors(tasks: Mapping[str, TaskKind]) -> Tuple[Array, Array]:
  """The static weights w_t and the uncertainty likelihood factors c_t, in task order."""
  return (jnp.asarray([task.weight for task in tasks.values()], jnp.float32),
          jnp.asarray([task.uncertainty_factor for task in tasks.values()], jnp.float32))


def _parameter_terms(params, tasks, weighting, shared_weight_decay, observed=None):
  """(Σ of the parameter terms of the objective, `{name: term}`): the regularisers on parameters
  and the weighting's own penalty (of the `observed` tasks: those with labels in the step)."""
  terms = parameter_regularizers(params, tasks, shared_weight_decay)
  penalty = weighting.penalty(params.get("task_weighting"), observed)
  if penalty is not None:
    terms["weighting/penalty"] = penalty
  return sum(terms.values(), jnp.zeros((), jnp.float32)), terms


def train_step(state: TrainState, batch: Batch, rng: Array, *, tasks: Mapping[str, TaskKind],
               schedule: optax.Schedule, weighting: Any = Fixed(),
               shared_weight_decay: float = 0.0, frozen: str = "",
               axis_name: Optional[str] = None,
               grad_accum_steps: int = 1, ema_decay: float = 0.0,
               modality_dropout: Optional[ModalityDropout] = None,
               balancing: Any = NoBalancing()) -> Tuple[TrainState, Dict[str, Any]]:
  """One optimizer step on L = Σ_t w_t L_t + regularisers (`mmjax/tasks/objective.py`).

  `rng` is the run's base key: the step folds in its own step number, so a resumed run draws the
  same dropout masks (and PCGrad orders) as an uninterrupted one. Each task loss L_t is the
  global batch's summed loss divided by the global count of the task's labelled examples (known
  before the forward pass), accumulated over `grad_accum_steps` equal micro-batches (a
  `lax.scan`; the same update as one step on the whole batch, each micro-batch drawing its own
  dropout masks) and, under a per-device driver, summed over `axis_name` with `lax.psum`: the
  update is the global batch's whatever its split. The data terms' gradient is one VJP with the
  cotangent (w_t) on the task losses, or, when the weighting needs each task's gradient, T + 1
  VJPs (one per task, one for the output regularisers) from the same forward pass; `weighting`
  (`mmjax/tasks/weighting.py`) turns them into the update, with the parameters matching the
  regex `frozen` (`config.optimizer.frozen`) left out. Regularisers on parameters are
  differentiated once, outside the data sum. A contrastive task's negatives are every example of
  the batch, over every device and, with accumulation, every micro-batch: its outputs are first
  computed for every micro-batch without gradients and its loss's gradient w.r.t. them is
  carried into each micro-batch's VJP (`_cached_contrastive_cotangents`), so that the update is
  the whole batch's; the price is one more forward pass over the batch without gradients (about
  a third of a step's compute).
  `modality_dropout` (`mmjax/modalities.py`) first makes the modalities it drops absent from
  their examples, drawn from the step's key for the global batch, so that the drivers, device
  splits and resumed runs agree. `balancing` (`mmjax/balancing/`) may change the encoders'
  gradients of the data terms from the same forward pass's outputs with each modality alone.
  `ema_decay` > 0 keeps ema ← d_t·ema + (1 − d_t)·params in `state.ema_params`, with the usual
  warm-up d_t = min(ema_decay, (1 + t) / (10 + t)) at step t, so that the initial parameters do
  not linger in the average (with d = 0.999, 0.999^1000 ≈ 37% of them would after 1,000 steps).

  A step whose loss, terms or gradients hold a NaN or Inf applies nothing: the returned state is
  the input state with `step` + 1, `skipped_steps` + 1 and the weighting's `skip` (DWA's period
  clock moves on; nothing else does) (the trainer then skips or stops, as
  `config.on_nonfinite` says), and `"finite"` in the metrics says which task or parameter group
  it was.

  Returns the new state and `{"values": this step's terms of the objective (global means, adding
  up to `loss`, the value differentiated), the task weights, gradient norms and the learning
  rate; "sums": the metric sums over the batch (see `objective_sums`); "finite": `_finiteness`}`.
  `grad_norm` is the model's gradient norm (the task weighting's parameters left out);
  `grad_norm/<m>` the norm of the objective's gradient reaching encoder m (before any
  balancing) and `grad_share/<m>` its share
  ‖g_m‖² / Σ_k ‖g_k‖² of the encoders' squared gradient norm (which modality the objective pushes
  hardest: modality imbalance); `modality_dropout/<subset>` the fraction of examples trained on
  with exactly that subset of modalities.
  """
  names = tuple(tasks)
  static, factors = task_weight_vectors(tasks)
  step_key = jax.random.fold_in(rng, state.step)
  dropout_rng = step_key
  if axis_name is not None:   # per-device slices draw independent masks
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
  subset_fractions = {}
  if modality_dropout is not None:
    batch, subset_fractions = modality_dropout(batch, jax.random.fold_in(step_key, 2 ** 30 + 1),
                                               axis_name)

  counts = label_counts(batch, tasks)
  if axis_name is not None:
    counts = jax.lax.psum(counts, axis_name)
  weighting_params = state.params.get("task_weighting")
  weights = weighting.weights(weighting_params, state.weighting_state, static, factors)
  # Cotangents of (task losses (T,), Σ output regularisers): one weighted row, or one per task
  # plus one for the regularisers.
  num_tasks = len(names)
  if weighting.per_task_gradients:
    task_cotangents = jnp.concatenate([jnp.eye(num_tasks), jnp.zeros((1, num_tasks))])
    reg_cotangents = jnp.concatenate([jnp.zeros(num_tasks), jnp.ones(1)])
  else:
    task_cotangents, reg_cotangents = weights[None], jnp.ones(1)

  # With accumulation, a contrastive task's negatives are the whole batch's: its embeddings are
  # cached first and its loss's gradient w.r.t. them reaches each micro-batch as a cotangent.
  cached = tuple(t for t in names if isinstance(tasks[t], Contrastive)) if grad_accum_steps > 1 \
      else ()

  def data_objective(params, micro_batch, key, feature_cotangents):
    balance_sums = {}
    if balancing.needs_unimodal:
      outputs, unimodal = state.apply_fn({"params": params}, micro_batch, train=True,
                                         rngs={"dropout": key}, method="with_unimodal")
      balance_sums = balancing.sums(jax.lax.stop_gradient(unimodal), micro_batch, tasks)
    else:
      outputs = state.apply_fn({"params": params}, micro_batch, train=True,
                               rngs={"dropout": key})
    direct = {t: tasks[t] for t in names if t not in cached}
    sums = objective_sums(outputs, micro_batch, direct, axis_name)
    shares = {t: jax.tree.map(lambda x: x / jnp.maximum(counts[t], 1), sums[t]) for t in direct}
    # A cached task's term: <cotangent, embeddings>, whose gradient is the one of its loss.
    task_losses = jnp.stack([
        shares[t]["loss"] if t in direct else sum(
            jnp.vdot(feature_cotangents[t][name], outputs[t][name])
            for name in feature_cotangents[t])
        for t in names])
    output_regs = sum((sum(share["reg"].values(), 0.0) for share in shares.values()), 0.0)
    return (task_losses, jnp.asarray(output_regs, jnp.float32)), (sums, balance_sums)

  def grad_rows(params, micro_batch, key, feature_cotangents=None):
    _, vjp_fn, sums = jax.vjp(
        lambda p: data_objective(p, micro_batch, key, feature_cotangents), params, has_aux=True)
    rows = jax.vmap(lambda task_cotangent, reg_cotangent: vjp_fn(
        (task_cotangent, reg_cotangent))[0])(task_cotangents, reg_cotangents)
    return rows, sums

  if grad_accum_steps == 1:
    rows, (sums, balance_sums) = grad_rows(state.params, batch, dropout_rng)
  else:
    micro = _micro_batches(batch, grad_accum_steps)
    micro_keys = jax.vmap(lambda index: jax.random.fold_in(dropout_rng, index))(
        jnp.arange(grad_accum_steps))
    cotangents, cached_sums = _cached_contrastive_cotangents(
        state, batch, micro, micro_keys, {t: tasks[t] for t in cached}, counts, axis_name)

    def accumulate(carry, inputs):
      micro_batch, key, micro_cotangents = inputs
      return jax.tree.map(jnp.add, carry, grad_rows(state.params, micro_batch, key,
                                                    micro_cotangents)), None

    first = lambda tree: jax.tree.map(lambda x: x[0], tree)
    rest = lambda tree: jax.tree.map(lambda x: x[1:], tree)
    initial = grad_rows(state.params, first(micro), first(micro_keys), first(cotangents))
    (rows, (sums, balance_sums)), _ = jax.lax.scan(
        accumulate, initial, (rest(micro), rest(micro_keys), rest(cotangents)))
    sums = {**sums, **cached_sums}
  if axis_name is not None:
    rows, sums, balance_sums = jax.lax.psum((rows, sums, balance_sums), axis_name)

  losses = jnp.stack([sums[t]["loss"] / jnp.maximum(counts[t], 1) for t in names])
  if weighting.per_task_gradients:
    task_grads = jax.tree.map(lambda g: g[:num_tasks], rows)
    reg_grads = jax.tree.map(lambda g: g[num_tasks], rows)
  else:
    task_grads, reg_grads = jax.tree.map(lambda g: g[0], rows), None
  if frozen:   # parameters that never move take no part in the weighting's gradient geometry
    labels = parameter_labels(task_grads, frozen)
    task_grads = jax.tree.map(lambda g, label: jnp.zeros_like(g) if label == "frozen" else g,
                              task_grads, labels)
  count_vector = jnp.stack([counts[t] for t in names])
  update = weighting.update(weighting_params, state.weighting_state, losses, count_vector,
                            task_grads, weights, state.step,
                            jax.random.fold_in(step_key, 2 ** 30))
  # Parameter terms (regularisers, the weighting's own penalty) are differentiated once, here.
  (_, param_terms), param_grads = jax.value_and_grad(_parameter_terms, has_aux=True)(
      state.params, tasks, weighting, shared_weight_decay, count_vector > 0)
  # The data terms' gradient (tasks and output regularisers), then the parameter terms'.
  data_grads = (update.model_grads if reg_grads is None
                else jax.tree.map(jnp.add, update.model_grads, reg_grads))
  grads = jax.tree.map(jnp.add, data_grads, param_grads)
  encoder_norms = {k[len(ENCODER_PREFIX):]: optax.tree.norm(v) for k, v in grads.items()
                   if k.startswith(ENCODER_PREFIX)}
  encoder_energy = sum(n ** 2 for n in encoder_norms.values())
  balance_values = {}
  if balancing.needs_unimodal:   # the encoders' data gradients, modulated
    modulated, balance_values = balancing.modulate(
        data_grads, balance_sums, state.step, jax.random.fold_in(step_key, 2 ** 30 + 2),
        {m: ENCODER_PREFIX + m for m in balance_sums})
    grads = jax.tree.map(jnp.add, modulated, param_grads)
  grad_norm = optax.tree.norm({k: v for k, v in grads.items() if k != "task_weighting"})
  if update.weighting_grads is not None:   # the data terms' part of the weighting's gradient
    grads = {**grads, "task_weighting": jax.tree.map(jnp.add, grads["task_weighting"],
                                                     update.weighting_grads)}

  values = {f"{t}/loss": losses[i] for i, t in enumerate(names)}
  values.update({f"{t}/reg/{k}": v / jnp.maximum(counts[t], 1)
                 for t in names for k, v in sums[t]["reg"].items()})
  values.update(param_terms)
  values.update({f"{t}/weight": weights[i] for i, t in enumerate(names)})
  values["loss"] = total_loss(values, tasks)
  if weighting.per_task_gradients:
    values.update(gradient_metrics(shared_matrix(task_grads), names))
  values.update(grad_norm=grad_norm, learning_rate=schedule(state.step))
  values.update({f"grad_norm/{m}": n for m, n in encoder_norms.items()})
  values.update({f"grad_share/{m}": n ** 2 / jnp.maximum(encoder_energy, 1e-30)
                 for m, n in encoder_norms.items()})
  values.update(subset_fractions)
  values.update(balance_values)

  new_state = state.apply_gradients(grads=grads)
  if weighting_params is not None:
    new_state = new_state.replace(params={**new_state.params, "task_weighting": weighting.normalize(
        new_state.params["task_weighting"], static)})
  new_state = new_state.replace(weighting_state=update.state)
  if ema_decay > 0:
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    new_state = new_state.replace(ema_params=jax.tree.map(
        lambda ema, p: decay * ema + (1 - decay) * p, state.ema_params, new_state.params))
  finite = _finiteness(values, names, grads)
  # A non-finite step changes nothing but the step counter (so that the data and the dropout
  # keys move on as in any run), the count of skipped steps and the weighting's clock (`skip`):
  # the state stays finite.
  skipped = state.replace(weighting_state=weighting.skip(state.weighting_state, state.step))
  new_state = jax.tree.map(lambda new, old: jnp.where(finite["step"], new, old),
                           new_state.replace(step=state.step), skipped)
  new_state = new_state.replace(step=state.step + 1, skipped_steps=state.skipped_steps
                                + jnp.where(finite["step"], 0, 1).astype(jnp.int32))
  return new_state, {"values": values, "sums": sums, "finite": finite}


def _finiteness(values: Mapping[str, Array], names, grads: Mapping[str, Any]) -> Dict[str, Any]:
  """`{"step": whether the loss (hence every term of it) and every gradient is finite, "tasks":
  (T,) whether each task's loss and regularisers are, "groups": {top-level parameter collection:
  whether its gradients are}}`, computed on device so that every step is checked without a host
  sync."""
  all_finite = lambda tree: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                               for x in jax.tree.leaves(tree)] or [True]))
  tasks = jnp.stack([all_finite({k: v for k, v in values.items() if k.startswith(f"{t}/")})
                     for t in names])
  groups = {group: all_finite(tree) for group, tree in grads.items()}
  step = jnp.isfinite(values["loss"]) & jnp.all(tasks) & jnp.all(jnp.stack(list(groups.values())))
  return {"step": step, "tasks": tasks, "groups": groups}


def eval_step(state: TrainState, batch: Batch, *, tasks: Mapping[str, TaskKind],
              weighting: Any = Fixed(), shared_weight_decay: float = 0.0,
              axis_name: Optional[str] = None) -> Dict[str, Any]:
  """`{"sums": metric sums over the batch (over all devices of `axis_name`), "values": the
  parameter terms of the objective and the task weights}`; examples with `batch['weight'] == 0`
  are padding and count nowhere. Uses the EMA parameters when kept."""
  params = evaluation_params(state)
  outputs = state.apply_fn({"params": params}, batch, train=False)
  sums = objective_sums(outputs, batch, tasks, axis_name)
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  static, factors = task_weight_vectors(tasks)
  weights = weighting.weights(params.get("task_weighting"), state.weighting_state, static, factors)
  values = _parameter_terms(params, tasks, weighting, shared_weight_decay)[1]
  values.update({f"{t}/weight": weights[i] for i, t in enumerate(tasks)})
  return {"sums": sums, "values": values}


def summarize(sums: Mapping[str, Any], values: Mapping[str, Any],
              tasks: Mapping[str, TaskKind]) -> Dict[str, float]:
  """Metrics of summed statistics and the objective's terms: every task's metrics and loss
  terms, the parameter terms and weights in `values`, and `loss`, their weighted total."""
  terms = {**data_terms(sums, tasks), **{k: float(v) for k, v in values.items()}}
  return {**terms, **task_metrics(sums, tasks), "loss": total_loss(terms, tasks)}



def evaluate(eval_fn: Any, state: TrainState, batches,
             tasks: Mapping[str, TaskKind]) -> Dict[str, float]:
  """Runs `eval_fn(state, batch)` over `batches` and returns the metrics and terms of the
  objective over all real examples (`summarize`), and their number as `examples`."""
  totals = values = None
  for batch in batches:
    found = eval_fn(state, batch)
    values = found["values"]
    totals = found["sums"] if totals is None else jax.tree.map(jnp.add, totals, found["sums"])
  totals, values = jax.device_get((totals, values))
  return {**summarize(totals, values, tasks), "examples": int(round(float(totals["count"])))}
