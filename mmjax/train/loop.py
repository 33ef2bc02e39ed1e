"""The trainer: config -> data -> model -> devices -> state -> resume -> steps (with the
evaluators of `config.evals` at their cadence, `mmjax/evaluators/`) -> results.json.

One linear function a reader follows top to bottom. Every problem in the config, the workdir or
the data is reported in one line before anything is compiled (`mmjax/train/checks.py`); SIGTERM
or SIGINT stops the run after its current step with a checkpoint saved; a non-finite step is
skipped or stops the run, as `config.on_nonfinite` says, and is never saved. On many hosts every
process runs it: each reads its own rows of every batch, all save and restore checkpoints
together, and only process 0 writes logs and results.
"""
import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from mmjax import data, evaluators, pretrained
from mmjax.balancing import balancing_from_config
from mmjax.errors import ConfigError, NonFiniteError, UserError, WorkdirError
from mmjax.evaluators.context import Context, local_batches, score
from mmjax.modalities import modality_dropout_from_config
from mmjax.model import model_from_config
from mmjax.tasks.kinds import Contrastive
from mmjax.tasks.objective import task_metrics, tasks_from_config
from mmjax.tasks.weighting import weighting_from_config
from mmjax.train import checkpoint, checks, finetune, flops, parallel, preemption
from mmjax.train.metrics_writer import MetricsWriter
from mmjax.train.state import init_state, make_optimizer, parameter_count
from mmjax.train.step import task_weight_vectors


def _objective_from_config(config: Any):
  """The model, tasks, task weighting and modality balancing of `config`; a bad name or field
  is a ConfigError."""
  try:
    tasks = tasks_from_config(config.tasks)
    return (model_from_config(config.model, config.tasks), tasks,
            weighting_from_config(config.task_weighting),
            balancing_from_config(config.balancing, tasks, config.model.encoders,
                                  config.total_steps))
  except ValueError as error:
    raise ConfigError(str(error)) from error


def _initialize_from(config: Any, state: Any) -> Any:
  """`state` with the parameters of `config.init_from`'s latest checkpoint copied into every
  top-level parameter collection (an encoder, the fusion, a head) that both models have with the
  same shapes: a pre-trained model's encoders for a linear probe or fine-tuning."""
  source = checkpoint.checkpoint_manager(config.init_from, 1, "loss", "min", read_only=True)
  saved = checkpoint.restore_raw(source)
  source.close()
  if saved is None:
    raise ConfigError(f"config.init_from={config.init_from!r} holds no checkpoint; train there "
                      "first or fix the path")
  saved_params = saved["params"]
  shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
  copied = {name: saved_params[name] for name in state.params
            if name in saved_params and shapes(saved_params[name]) == shapes(state.params[name])}
  if not copied:
    raise ConfigError(f"config.init_from={config.init_from!r}: no parameter collection of its "
                      f"model ({sorted(saved_params)}) matches this model's "
                      f"({sorted(state.params)}) in names and shapes")
  params = {name: jax.tree.map(lambda new, old: jax.device_put(np.asarray(new, old.dtype),
                                                                old.sharding),
                               copied[name], value) if name in copied else value
            for name, value in state.params.items()}
  print(f"mmjax: initialised {', '.join(sorted(copied))} from {config.init_from}")
  return state.replace(params=params)


class Setup(NamedTuple):
  """What train and eval start from: a split's reader, the tasks, the driver, the train state
  on its devices, the base key of the steps, the check every batch read goes through, the
  evaluators of `config.evals` and the task weighting."""
  readers: Mapping[str, data.ExampleReader]
  tasks: Mapping[str, Any]
  driver: parallel.Driver
  state: Any
  step_rng: jax.Array
  batch_check: checks.BatchCheck
  evaluators: Mapping[str, Any]
  weighting: Any

  def context(self, config: Any, workdir: str) -> Context:
    """What the evaluators read of this run."""
    return Context(config, workdir, self.readers, self.tasks, self.driver, self.batch_check,
                   compiled={})


def train_split(config: Any) -> str:
  """The split trained on: `dataset.train_split`, or its first `dataset.train_examples` examples
  when that is set (learning curves)."""
  if config.dataset.train_examples:
    return f"{config.dataset.train_split}[:{config.dataset.train_examples}]"
  return config.dataset.train_split


def _setup(config: Any) -> Setup:
  """The `Setup` of `config`, its state freshly initialised (or from `config.init_from`)."""
  checks.check_step_counts(config)
  checks.check_value_ranges(config)
  if config.dataset.cache not in data.pipeline.CACHES:
    raise ConfigError(f"config.dataset.cache={config.dataset.cache!r}; use one of "
                      f"{', '.join(data.pipeline.CACHES)}")
  try:
    builder = data.prepare(config.dataset.name, config.dataset.data_dir,
                           config.dataset.manual_dir, config.dataset.options.to_dict())
  except ValueError as error:   # an unknown dataset or config name, a bad option
    if isinstance(error, UserError):
      raise
    raise ConfigError(str(error)) from error
  model, tasks, weighting, balancing = _objective_from_config(config)
  modality_dropout = modality_dropout_from_config(config.modality_dropout, config.model.encoders)
  contrastive = [name for name, task in tasks.items() if isinstance(task, Contrastive)]
  if modality_dropout and contrastive:
    raise ConfigError(f"config.modality_dropout with the contrastive task {contrastive[0]!r}: a "
                      "pair with a modality absent has no positive, and is not left out of the "
                      "loss yet; train the contrastive tasks without modality dropout")
  evaluators_ = evaluators.evaluators_from_config(config.evals, config, tasks)
  evaluators.check_best_metric(config.checkpoint.best_metric, evaluators_, tasks)
  splits = {train_split(config)}.union(*(e.splits() for e in evaluators_.values()))
  if _estimates(weighting):
    splits.add(weighting.heldout_split)
  for split in sorted(splits):
    try:   # a split's name or a tfds slice of it, e.g. 'train[:1000]' (sample-efficiency sweeps)
      builder.info.splits[split]
    except (KeyError, ValueError) as error:
      raise ConfigError(f"split {split!r} of dataset {builder.name!r}: "
                        f"{' '.join(str(error).split()).rstrip('.')}; its splits are "
                        f"{sorted(builder.info.splits)}, sliced as in 'train[:1000]' or "
                        "'train[:10%]'") from error
  if _estimates(weighting):
    _check_heldout(builder.info.splits, weighting.heldout_split, train_split(config))
  readers = {split: data.ExampleReader(builder, split, config.dataset.cache)
             for split in splits}
  example_batch = next(data.eval_batches(readers[train_split(config)],
                                         config.batch_size))
  checks.check_config(config, builder, example_batch, tasks)
  evaluators.check_data(evaluators_, builder, example_batch)
  batch_check = checks.BatchCheck(config, example_batch, tasks, model)
  batch_check(example_batch, f"the first batch of split {train_split(config)!r}",
              config.batch_size)
  try:
    scales = (finetune.learning_rate_scales(
        config.finetune, model,
        jax.eval_shape(model.init, jax.random.key(0), example_batch)["params"])
              if config.finetune else None)   # the parameter shapes, traced only when needed
    tx, schedule = make_optimizer(config.optimizer, config.total_steps, scales)
  except ValueError as error:
    if isinstance(error, UserError):
      raise
    raise ConfigError(str(error)) from error
  static = task_weight_vectors(tasks)[0]
  init = functools.partial(init_state, model, tx, ema=config.ema_decay > 0,
                           weighting_params=weighting.init_params(static),
                           weighting_state=weighting.init_state(static))
  abstract_state = jax.eval_shape(init, jax.random.key(0), example_batch)
  checks.check_weighting(weighting, abstract_state.params)
  towers = pretrained.checkpointed(model)
  pretrained.load_into_params(towers, abstract_state.params, read=False)
  driver = parallel.make_driver(config.parallel, abstract_state, tasks=tasks, schedule=schedule,
                                weighting=weighting,
                                shared_weight_decay=config.shared_weight_decay,
                                frozen=config.optimizer.frozen,
                                grad_accum_steps=config.grad_accum_steps,
                                ema_decay=config.ema_decay,
                                modality_dropout=modality_dropout, balancing=balancing)
  # Every process computes the same keys and state, directly in their shardings.
  init_rng, step_rng = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                               out_shardings=driver.replicated)()
  state = jax.jit(init, out_shardings=driver.state_sharding)(init_rng, example_batch)
  if towers:
    params = pretrained.load_into_params(towers, state.params)
    state = state.replace(params=params,
                          ema_params=None if state.ema_params is None else params)
  if config.init_from:
    state = _initialize_from(config, state)
  return Setup(readers, tasks, driver, state, step_rng, batch_check, evaluators_, weighting)


def _estimates(weighting: Any) -> bool:
  """Whether the task weighting is estimated on the host from held-out losses
  (Gradient-Blending), which the trainer then does at step 0 and every `period_steps`."""
  return hasattr(weighting, "estimate")


def _check_heldout(splits: Any, heldout: str, trained: str) -> None:
  """ConfigError when the held-out split of an estimate shares an example with the split trained
  on (tfds split specs, resolved to index ranges over the dataset's `splits`)."""
  def ranges(spec):
    found = []
    for part in tfds.core.ReadInstruction.from_spec(spec).to_absolute(splits):
      size = splits[part.splitname].num_examples
      start = 0 if part.from_ is None else part.from_
      found.append((part.splitname, start, size if part.to is None else part.to))
    return found
  if any(name == other and max(start, first) < min(stop, last)
         for name, start, stop in ranges(heldout) for other, first, last in ranges(trained)):
    raise ConfigError(f"config.task_weighting.heldout_split={heldout!r} holds examples of the "
                      f"split trained on ({trained!r}); hold them out, e.g. "
                      "config.dataset.train_split='train[8%:]' with heldout_split='train[:8%]'")


def _estimated(run: Setup, context: Context, state: Any, trained: str, step: int,
               writer: Optional[MetricsWriter]) -> Any:
  """`state` after the task weighting's estimate from every task's loss on the split trained on
  and on the held-out split (Gradient-Blending), logged as `gradient_blend/<task>/weight`,
  `.../train_loss` and `.../heldout_loss`."""
  losses = []
  for split in (trained, run.weighting.heldout_split):
    found = score(context, state, local_batches(context, split))
    losses.append(np.array([found[f"{t}/loss"] for t in run.tasks]))
  new = run.weighting.estimate(jax.device_get(state.weighting_state), *losses)
  state = state.replace(weighting_state=jax.device_put(
      new, run.driver.state_sharding.weighting_state))
  if writer:
    weights = np.asarray(jax.device_get(state.weighting_state["weights"]))
    writer.write(step, "gradient_blend", {
        **{f"{t}/weight": float(w) for t, w in zip(run.tasks, weights)},
        **{f"{t}/train_loss": float(v) for t, v in zip(run.tasks, losses[0])},
        **{f"{t}/heldout_loss": float(v) for t, v in zip(run.tasks, losses[1])}})
  return state


def _local_batches(driver, batches):
  """This process's rows of each batch, as global arrays."""
  return (driver.put_batch(batch) for batch in batches)


def write_results(path: str, step: int, results: Mapping[str, Any]) -> None:
  """`{"step": step, key: results}` as JSON."""
  with open(path, "w") as file:
    json.dump({"step": step, **results}, file, indent=2, sort_keys=True)


def _format(metrics: Mapping[str, float]) -> str:
  return ", ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4f}" for k, v in metrics.items())


def _is_training_term(key: str) -> bool:
  """A term of the objective that evaluation repeats from training (task weights, regularisers,
  the weighting's penalty), not an evaluation metric."""
  return (key.endswith("/weight") or "/reg/" in key or key.startswith("reg/")
          or key == "weighting/penalty")


def _evaluation_line(results: Mapping[str, Any]) -> str:
  """A printed evaluation line: its losses, metrics and example counts, or where a long report
  went."""
  shown = {k: v for k, v in evaluators.scalars(results).items() if not _is_training_term(k)}
  return _format(shown) if len(shown) <= 24 else f"{len(shown)} values (results.json)"


def _evaluate(run: Setup, context: Context, state: Any, step: int, total_steps: int,
              writer: Optional[MetricsWriter], progress: Any
              ) -> Optional[Tuple[Dict[str, Any], Dict[str, float]]]:
  """`evaluators.run_all` of the evaluators due after step `step` (None when none is), each
  logged as `<key>/<metric>` and printed."""
  due = evaluators.due(run.evaluators, step, total_steps)
  if not due:
    return None
  results, seconds = evaluators.run_all(due, context, state)
  for key, found in results.items():
    if writer:
      writer.write(step, key, {**evaluators.scalars(found), "seconds": seconds[key]})
      progress.write(f"step {step}: {key} {_evaluation_line(found)}")
  return results, seconds


def _selection(evaluation: Optional[Tuple[Dict[str, Any], Any]],
               best_metric: str) -> Optional[dict]:
  """The metrics a checkpoint is saved with: every scalar of the evaluation's results
  (`<key>/<metric>`) when they have `best_metric`, else None."""
  if evaluation is None:
    return None
  found = evaluators.scalars(evaluation[0])
  return found if best_metric in found else None


def _line_weights(window, tasks) -> Dict[str, float]:
  """`<t>/weight` of a train line: Σ_s w_t,s·L_t,s / Σ_s L_t,s over its steps s, the loss-weighted
  mean, so that Σ_t weight_t·<t>/loss adds up to the line's mean loss exactly when the weights
  change from step to step (learned weights); fixed weights are unchanged by it."""
  weights = {}
  for task in tasks:
    losses = np.array([float(m["values"][f"{task}/loss"]) for m in window])
    steps = np.array([float(m["values"][f"{task}/weight"]) for m in window])
    weights[f"{task}/weight"] = (float(steps @ losses / losses.sum()) if losses.sum() != 0
                                 else float(steps.mean()))
  return weights


def _flops(lowered: Any) -> float:
  """XLA's floating-point operation count of a lowered step (its cost analysis; for a program
  split over devices, the count of one device's part)."""
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def _nonfinite_parts(finite: Mapping[str, Any], tasks) -> str:
  """What went non-finite in a step, from its `metrics["finite"]` on the host."""
  parts = [f"the loss of task {t!r}" for t, ok in zip(tasks, finite["tasks"]) if not ok]
  groups = [group for group, ok in finite["groups"].items() if not ok]
  if groups:
    parts.append(f"the gradients of {', '.join(groups)}")
  return " and ".join(parts) or "the total loss"


def _check_finite(metrics: Mapping[str, Any], step: int, tasks, latest: Optional[int]) -> None:
  """NonFiniteError naming the task or parameter group when step `step` was not finite."""
  finite = jax.device_get(metrics["finite"])
  if not finite["step"]:
    raise NonFiniteError(
        f"step {step}: {_nonfinite_parts(finite, tasks)} went non-finite (NaN or Inf); the update "
        f"was not applied and nothing non-finite was saved (latest checkpoint: step {latest}); "
        "lower config.optimizer.learning_rate, check the data, or set "
        "config.on_nonfinite='skip' to skip such steps")


def _train_line(window, tasks, batch_size: int, seconds: float, input_seconds: float,
                mfu_of: Callable[[float], Optional[float]]) -> Dict[str, float]:
  """A train line of `metrics.jsonl` over the steps of `window`, which took `seconds`, of which
  the host waited `input_seconds` for batches: the objective's terms as means over its finite
  steps, the metrics of their summed statistics, `skipped_steps` (how many steps were non-finite
  and applied nothing), and where the time went: `step_seconds` (wall time per step),
  `input_wait_fraction`, `samples_per_second` and `mfu` (`mfu_of(step_seconds)`, None where the
  device's peak is unknown)."""
  kept = [m for m in window if m["finite"]["step"]]
  step_seconds = seconds / len(window)
  logged = {"skipped_steps": len(window) - len(kept),
            "learning_rate": float(window[-1]["values"]["learning_rate"]),
            "samples_per_second": len(window) * batch_size / seconds,
            "step_seconds": step_seconds, "input_wait_fraction": input_seconds / seconds,
            "mfu": mfu_of(step_seconds)}
  if kept:
    summed = functools.reduce(lambda a, b: jax.tree.map(np.add, a, b), kept)
    logged.update({k: float(v) / len(kept) for k, v in summed["values"].items()
                   if k != "learning_rate"})
    logged.update(_line_weights(kept, tasks))
    logged.update(task_metrics(summed["sums"], tasks))
  return logged


def train_and_evaluate(config: Any, workdir: str, *,
                       stop_after_step: Optional[int] = None) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and writes results.json.

  `stop_after_step` ends the run early after saving a checkpoint at that step, as SIGTERM would;
  calling again resumes exactly where it stopped. Returns the final results (empty when stopped
  early).
  """
  checks.prepare_workdir(workdir)
  if checkpoint.has_checkpoint(workdir):
    checks.check_resumable(workdir, config)
  run = _setup(config)
  readers, tasks, driver, state, step_rng, batch_check, _, weighting = run
  context = run.context(config, workdir)
  lead = jax.process_index() == 0
  report = print if lead else (lambda *args, **kwargs: None)
  parameters = parameter_count(state.params)
  report(f"mmjax: {parameters:,} parameters; dataset {config.dataset.name}; "
         f"{config.parallel.driver} driver on {driver.mesh.devices.size} device(s), "
         f"{jax.process_count()} process(es); workdir {workdir}")

  # Checkpoints: resume from the latest one.
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric,
                                          config.checkpoint.best_mode)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
    report(f"mmjax: resumed from step {int(state.step)}")
  if lead:
    checks.store_config(workdir, config)
  start_step = int(state.step)

  # Steps: one pure function, compiled by the driver with the state's buffers donated.
  split = train_split(config)
  batches = _local_batches(driver, batch_check.batches(
      data.train_batches(readers[split], config.batch_size, seed=config.seed,
                         start_step=start_step, process_index=jax.process_index(),
                         process_count=jax.process_count()),
      lambda i: f"the batch of step {start_step + 1 + i} (split {split!r})",
      config.batch_size // jax.process_count()))
  last_step = config.total_steps if stop_after_step is None else min(stop_after_step,
                                                                     config.total_steps)
  first_batch = next(batches)
  start = time.perf_counter()
  lowered = driver.train.lower(state, first_batch, step_rng)
  # Compiled ahead of time, and only when there are steps to run: its duration is the compile time.
  train = lowered.compile() if start_step < last_step else None
  model_flops = flops.matmul_flops(driver.train, state, first_batch, step_rng)
  complexity = {"parameters": parameters,
                "compile_seconds": time.perf_counter() - start if train else None,
                "train_flops_per_example": _flops(lowered) * driver.mesh.devices.size
                / config.batch_size,
                "train_model_flops_per_example": model_flops / config.batch_size}
  peak = flops.peak_flops(jax.devices()[0].device_kind, config.model.dtype or "float32")
  mfu_of = functools.partial(flops.mfu, model_flops, devices=driver.mesh.devices.size, peak=peak)
  profile_start, profile_stop = config.profile_steps
  batches = itertools.chain([first_batch], batches)
  writer = MetricsWriter(workdir, start_step) if lead else None
  stop_on_nonfinite = config.on_nonfinite == "stop"
  window, window_start, unchecked, stopping, final = [], time.perf_counter(), None, None, None
  input_seconds, profiling = 0.0, False
  train_seconds, trained_steps = 0.0, 0
  quiet = {} if lead else {"disable": True}
  estimates = _estimates(weighting)
  if estimates and start_step == 0 and start_step < last_step:
    state = _estimated(run, context, state, split, 0, writer)
  try:
    with preemption.StopSignals() as signals, tqdm(
        total=config.total_steps, initial=start_step, desc="train", unit="step",
        dynamic_ncols=True, **quiet) as progress:
      for step in range(start_step + 1, last_step + 1):
        if step == profile_start and lead:
          jax.profiler.start_trace(os.path.join(workdir, "profile"))
          profiling = True
        waited = time.perf_counter()
        batch = next(batches)
        input_seconds += time.perf_counter() - waited
        state, metrics = train(state, batch, step_rng)
        if estimates and step % weighting.period_steps == 0:   # saved with this step's state
          estimating = time.perf_counter()
          state = _estimated(run, context, state, split, step, writer)
          window_start += time.perf_counter() - estimating   # not training time
        if step == profile_stop and profiling:
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
          profiling = False
        if stop_on_nonfinite and unchecked:   # the previous step: done by now, no stall
          _check_finite(*unchecked, tasks, manager.latest_step())
        unchecked = (metrics, step)
        window.append(metrics)
        progress.update(1)
        stopping = signals.received or (jax.process_count() > 1
                                        and manager.reached_preemption(step) and "SIGTERM")
        if step % config.log_every_steps == 0 or step == last_step or stopping:
          window = jax.device_get(window)
          seconds = time.perf_counter() - window_start
          train_seconds, trained_steps = train_seconds + seconds, trained_steps + len(window)
          logged = _train_line(window, tasks, config.batch_size, seconds, input_seconds, mfu_of)
          if stop_on_nonfinite:
            _check_finite(*unchecked, tasks, manager.latest_step())
          if writer:
            writer.write(step, "train", logged)
          if logged["skipped_steps"]:
            skipped = [(m, s) for s, m in zip(range(step - len(window) + 1, step + 1), window)
                       if not m["finite"]["step"]]
            report(f"mmjax: skipped {len(skipped)} non-finite step(s) up to step {step}, first "
                   f"step {skipped[0][1]}: {_nonfinite_parts(skipped[0][0]['finite'], tasks)}")
            total = int(jax.device_get(state.skipped_steps))
            if total > config.max_skipped_steps:
              raise NonFiniteError(
                  f"{total} steps were non-finite and skipped, more than "
                  f"config.max_skipped_steps={config.max_skipped_steps} (the latest: step "
                  f"{skipped[-1][1]}, {_nonfinite_parts(skipped[-1][0]['finite'], tasks)}); "
                  "lower config.optimizer.learning_rate or check the data")
          if "loss" in logged:
            progress.set_postfix(loss=f"{logged['loss']:.4f}",
                                 samples_per_s=f"{logged['samples_per_second']:.0f}")
          window, window_start, input_seconds = [], time.perf_counter(), 0.0
        evaluation = _evaluate(run, context, state, step, config.total_steps, writer, progress)
        if step == config.total_steps:
          final = evaluation
        if (evaluation is not None or step % config.checkpoint_every_steps == 0
            or step == last_step or stopping):
          if stop_on_nonfinite:
            _check_finite(*unchecked, tasks, manager.latest_step())
          checkpoint.save(manager, state, _selection(evaluation, config.checkpoint.best_metric))
        if stopping:
          break
        if not window:   # the next line's time is training only, not this step's eval or save
          window_start = time.perf_counter()
  finally:   # an error or a signal never leaves a save half-written, nor a trace open
    if profiling:
      jax.profiler.stop_trace()
    manager.wait_until_finished()
    manager.close()

  if int(state.step) < config.total_steps:
    if writer:
      writer.close()
    if stopping:
      report(f"mmjax: stopped by {stopping} at step {int(state.step)} of {config.total_steps}; "
             f"checkpoint saved in {os.path.join(workdir, 'checkpoints')}; run the same command "
             "to resume")
    return {}
  # Resumed at the end, no step ran here: the final evaluation has not run yet.
  results, seconds = final or evaluators.run_all(run.evaluators, context, state)
  metric_keys = [k for k, e in run.evaluators.items() if isinstance(e, evaluators.Metrics)]
  first_split = next(iter(run.evaluators.values())).splits()[0]
  eval_batch = driver.put_batch(next(data.eval_batches(
      readers[first_split], config.eval_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count())))
  memory = jax.local_devices()[0].memory_stats()
  metric_seconds = sum(seconds[k] for k in metric_keys)
  complexity.update(
      eval_flops_per_example=_flops(driver.evaluate.lower(state, eval_batch))
      * driver.mesh.devices.size / config.eval_batch_size,
      train_samples_per_second=(trained_steps * config.batch_size / train_seconds
                                if train_seconds else None),
      eval_samples_per_second=(sum(results[k]["examples"] for k in metric_keys) / metric_seconds
                               if metric_seconds else None),
      evaluator_seconds=seconds,
      peak_memory_bytes=memory.get("peak_bytes_in_use", "n/a") if memory else "n/a")
  if not lead:
    return {**results, "complexity": complexity}
  writer.close()
  print("mmjax: final " + "; ".join(f"{key}: {_evaluation_line(found)}"
                                     for key, found in results.items()))
  results["complexity"] = complexity
  write_results(os.path.join(workdir, "results.json"), int(state.step), results)
  return results


def restore_checkpoint(config: Any, workdir: str, step: Optional[int] = None) -> Setup:
  """The `Setup` of `config` with the state saved at `step` (the latest when None) in `workdir`,
  placed on the driver's devices. The workdir's stored config must agree with `config` in the
  fields that give the checkpoint's numbers their meaning (`checks.EVALUATED_FIELDS`)."""
  if not checkpoint.has_checkpoint(workdir):
    raise WorkdirError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; run `mmjax "
                       "train` with this --workdir first")
  checks.check_resumable(workdir, config, compared=checks.EVALUATED_FIELDS)
  run = _setup(config)
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric,
                                          config.checkpoint.best_mode, read_only=True)
  restored = checkpoint.restore(manager, run.state, step)
  if restored is None:
    raise WorkdirError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; run `mmjax "
                       "train` with this --workdir first")
  return run._replace(state=restored)
