"""The trainer: config -> data -> model -> devices -> state -> resume -> steps -> evals ->
results.json.

One linear function a reader follows top to bottom. Every problem in the config is reported in one
line before anything is compiled. On many hosts every process runs it: each reads its own rows of
every batch, all save and restore checkpoints together, and only process 0 writes logs and results.
"""
import functools
import json
import math
import os
import re
import time
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np
from tqdm import tqdm

from mmjax import data, robustness
from mmjax.errors import ConfigError
from mmjax.model import model_from_config
from mmjax.tasks import kinds
from mmjax.tasks.objective import task_metrics, tasks_from_config
from mmjax.tasks.objective import is_shared, parameter_path
from mmjax.tasks.weighting import GradNorm, weighting_from_config
from mmjax.train import checkpoint, parallel
from mmjax.train.metrics_writer import MetricsWriter
from mmjax.train.state import init_state, make_optimizer, parameter_count
from mmjax.train.step import evaluate, task_weight_vectors


def check_step_counts(config: Any) -> None:
  """Raises ConfigError for a batch size or step interval that is not positive, or that does not
  split over the devices and micro-batches."""
  positive = ("batch_size", "eval_batch_size", "total_steps", "log_every_steps",
              "eval_every_steps", "checkpoint_every_steps", "grad_accum_steps")
  for field in positive:
    if config[field] <= 0:
      raise ConfigError(f"config.{field}={config[field]} must be positive")
  if config.parallel.driver not in parallel.DRIVERS:
    raise ConfigError(f"config.parallel.driver={config.parallel.driver!r}; use one of "
                      f"{', '.join(parallel.DRIVERS)}")
  if not 0 <= config.ema_decay < 1:
    raise ConfigError(f"config.ema_decay={config.ema_decay} must lie in [0, 1); 0 keeps no EMA")
  devices = parallel.device_count(config.parallel)
  if devices > jax.device_count() or (jax.process_count() > 1 and devices != jax.device_count()):
    raise ConfigError(f"config.parallel.num_devices={config.parallel.num_devices} but "
                      f"{jax.device_count()} devices are available (over {jax.process_count()} "
                      "processes); use 0 for all of them")
  if devices % config.parallel.fsdp:
    raise ConfigError(f"config.parallel.fsdp={config.parallel.fsdp} does not divide the "
                      f"{devices} devices; pick a divisor")
  if config.batch_size % (devices * config.grad_accum_steps):
    raise ConfigError(f"config.batch_size={config.batch_size} does not split into "
                      f"{config.grad_accum_steps} micro-batch(es) over {devices} devices; use a "
                      f"multiple of {devices * config.grad_accum_steps}")
  if config.eval_batch_size % devices:
    raise ConfigError(f"config.eval_batch_size={config.eval_batch_size} does not split over "
                      f"{devices} devices; use a multiple of {devices}")


def _check_task_labels(name: str, task: Any, head: Any, builder: Any,
                       batch: Mapping[str, np.ndarray]) -> None:
  """Raises ConfigError when task `name`'s labels do not fit its kind or its head."""
  label_key = task.label_key
  if label_key not in batch:
    raise ConfigError(f"task {name!r} reads labels {label_key!r}, which dataset "
                      f"{builder.name!r} lacks; its keys are {sorted(batch)}")
  feature = builder.info.features[label_key] if label_key in builder.info.features else None
  labels, outputs = batch[label_key], head.get("num_classes")
  if isinstance(task, kinds.Classification):
    classes = getattr(feature, "num_classes", None)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ConfigError(f"task {name!r} is a classification task but {label_key!r} holds "
                        f"{labels.dtype} labels of shape {labels.shape[1:]}; use integer class "
                        "ids, or the 'multilabel' or 'regression' kind")
    if classes is not None and outputs != classes:
      raise ConfigError(f"config.model.heads.{name}.num_classes={outputs} but {label_key!r} "
                        f"has {classes} classes; set it to {classes}")
  elif isinstance(task, kinds.MultiLabel):
    if labels.ndim != 2 or outputs != labels.shape[1]:
      raise ConfigError(f"config.model.heads.{name}.num_classes={outputs} but the multi-hot "
                        f"labels {label_key!r} have shape {labels.shape[1:]}; set it to the "
                        "number of labels")
  elif isinstance(task, kinds.Regression):
    dims = int(np.prod(labels.shape[1:]))
    if outputs != dims:
      raise ConfigError(f"config.model.heads.{name}.num_classes={outputs} but the regression "
                        f"targets {label_key!r} have {dims} value(s) per example; set it to {dims}")


def check_config(config: Any, builder: Any, batch: Mapping[str, np.ndarray],
                 tasks: Mapping[str, Any]) -> None:
  """Raises ConfigError naming the first field that cannot work with this dataset."""
  for modality, spec in config.model.encoders.items():
    if modality not in batch:
      raise ConfigError(f"config.model.encoders has {modality!r} but dataset {builder.name!r} "
                        f"batches have only {sorted(batch)}; rename or remove that encoder")
    vocab_size = builder.info.metadata.get("vocabulary_size") if builder.info.metadata else None
    if "vocab_size" in spec and vocab_size and spec["vocab_size"] < vocab_size:
      raise ConfigError(f"config.model.encoders.{modality}.vocab_size={spec['vocab_size']} is "
                        f"smaller than the dataset's vocabulary ({vocab_size}); raise it")
  for name, task in tasks.items():
    if name not in config.model.heads:
      raise ConfigError(f"config.tasks has {name!r} but config.model.heads does not; add a head "
                        f"named {name!r}")
    head = config.model.heads[name]
    if (head.get("name") == "contrastive") != isinstance(task, kinds.Contrastive):
      raise ConfigError(f"task {name!r} is a {type(task).__name__.lower()} task but its head is "
                        f"{head.get('name')!r}; contrastive tasks take a 'contrastive' head, and "
                        "only they do")
    if isinstance(task, kinds.Contrastive):
      missing = [m for m in head["modalities"] if m not in config.model.encoders]
      if missing or len(head["modalities"]) != 2:
        raise ConfigError(f"config.model.heads.{name}.modalities={tuple(head['modalities'])} "
                          f"must name two of the encoders {sorted(config.model.encoders)}")
    else:
      _check_task_labels(name, task, head, builder, batch)
  best_metric = config.checkpoint.best_metric
  if best_metric != "loss" and best_metric.split("/")[0] not in tasks:
    raise ConfigError(f"config.checkpoint.best_metric={best_metric!r} names no task; use 'loss' "
                      f"or '<task>/<metric>' (e.g. '<task>/accuracy' or '<task>/loss') with a "
                      f"task from {sorted(tasks)}")


def check_weighting(weighting: Any, params: Any) -> None:
  """Raises ConfigError when GradNorm's `layer` regex names no shared parameter."""
  if isinstance(weighting, GradNorm):
    paths = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    shared = [p for p in paths if is_shared(p.split("/")[0])]
    if not any(re.search(weighting.layer, p) for p in shared):
      raise ConfigError(f"config.task_weighting.layer={weighting.layer!r} matches no shared "
                        f"parameter; they are e.g. {', '.join(shared[:4])}")


def _objective_from_config(config: Any):
  """The model, tasks and task weighting of `config`; a bad name or field is a ConfigError."""
  try:
    return (model_from_config(config.model), tasks_from_config(config.tasks),
            weighting_from_config(config.task_weighting))
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


def _setup(config: Any):
  """Data readers, the model's tasks, the driver and an initial train state placed on its devices
  (shared by train and eval)."""
  check_step_counts(config)
  if config.dataset.cache not in data.pipeline.CACHES:
    raise ConfigError(f"config.dataset.cache={config.dataset.cache!r}; use one of "
                      f"{', '.join(data.pipeline.CACHES)}")
  builder = data.prepare(config.dataset.name, config.dataset.data_dir, config.dataset.manual_dir,
                         config.dataset.options.to_dict())
  splits = {config.dataset.train_split, *config.eval_splits}
  missing = splits - set(builder.info.splits)
  if missing:
    raise ConfigError(f"splits {sorted(missing)} are not in dataset {builder.name!r}; its splits "
                      f"are {sorted(builder.info.splits)}")
  readers = {split: data.ExampleReader(builder, split, config.dataset.cache)
             for split in splits}
  example_batch = next(data.eval_batches(readers[config.dataset.train_split],
                                         config.batch_size))
  model, tasks, weighting = _objective_from_config(config)
  check_config(config, builder, example_batch, tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  static = task_weight_vectors(tasks)[0]
  init = functools.partial(init_state, model, tx, ema=config.ema_decay > 0,
                           weighting_params=weighting.init_params(static),
                           weighting_state=weighting.init_state(static))
  abstract_state = jax.eval_shape(init, jax.random.key(0), example_batch)
  check_weighting(weighting, abstract_state.params)
  driver = parallel.make_driver(config.parallel, abstract_state, tasks=tasks, schedule=schedule,
                                weighting=weighting,
                                shared_weight_decay=config.shared_weight_decay,
                                frozen=config.optimizer.frozen,
                                grad_accum_steps=config.grad_accum_steps,
                                ema_decay=config.ema_decay)
  # Every process computes the same keys and state, directly in their shardings.
  init_rng, step_rng = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                               out_shardings=driver.replicated)()
  state = jax.jit(init, out_shardings=driver.state_sharding)(init_rng, example_batch)
  if config.init_from:
    state = _initialize_from(config, state)
  return readers, tasks, driver, state, step_rng


def _local_batches(driver, batches):
  """This process's rows of each batch, as global arrays."""
  return (driver.put_batch(batch) for batch in batches)


def _evaluate_splits(config, driver, tasks, state, readers, splits) -> Dict[str, Dict[str, float]]:
  return {split: evaluate(driver.evaluate, state, _local_batches(driver, data.eval_batches(
      readers[split], config.eval_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count())), tasks=tasks)
          for split in splits}


def _write_results(path: str, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
  """`{"step": step, split: {metric: value}}` as JSON."""
  with open(path, "w") as file:
    json.dump({"step": step, **results}, file, indent=2, sort_keys=True)


def _format(metrics: Mapping[str, float]) -> str:
  return ", ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4f}" for k, v in metrics.items())


def _flatten_single_task(metrics: Dict[str, float], tasks) -> Dict[str, float]:
  """With one classification task, its accuracy is also reported as plain `accuracy` (`loss` is
  the total)."""
  if len(tasks) != 1 or f"{next(iter(tasks))}/accuracy" not in metrics:
    return metrics
  return {**metrics, "accuracy": metrics[f"{next(iter(tasks))}/accuracy"]}


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


def train_and_evaluate(config: Any, workdir: str, *,
                       stop_after_step: Optional[int] = None) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and writes results.json.

  `stop_after_step` ends the run early after saving a checkpoint at that step, as a preempted
  job would; calling again resumes exactly where it stopped. Returns the final results (empty
  when stopped early).
  """
  os.makedirs(workdir, exist_ok=True)
  readers, tasks, driver, state, step_rng = _setup(config)
  lead = jax.process_index() == 0
  report = print if lead else (lambda *args, **kwargs: None)
  report(f"mmjax: {parameter_count(state.params):,} parameters; dataset {config.dataset.name}; "
         f"{config.parallel.driver} driver on {driver.mesh.devices.size} device(s), "
         f"{jax.process_count()} process(es); workdir {workdir}")

  # Checkpoints: resume from the latest one.
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric, config.checkpoint.best_mode)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
    report(f"mmjax: resumed from step {int(state.step)}")
  start_step = int(state.step)

  # Steps: one pure function, compiled by the driver with the state's buffers donated.
  batches = _local_batches(driver, data.train_batches(
      readers[config.dataset.train_split], config.batch_size, seed=config.seed,
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count()))
  writer = MetricsWriter(workdir) if lead else None
  last_step = config.total_steps if stop_after_step is None else min(stop_after_step,
                                                                     config.total_steps)
  window, window_start = [], time.perf_counter()
  quiet = {} if lead else {"disable": True}
  with tqdm(total=config.total_steps, initial=start_step, desc="train", unit="step",
            dynamic_ncols=True, **quiet) as progress:
    for step in range(start_step + 1, last_step + 1):
      state, metrics = driver.train(state, next(batches), step_rng)
      window.append(metrics)
      progress.update(1)
      if step % config.log_every_steps == 0 or step == last_step:
        window = jax.device_get(window)
        summed = functools.reduce(lambda a, b: jax.tree.map(np.add, a, b), window)
        # The objective's terms: means over the line's steps; metrics: from the summed statistics.
        logged = {k: float(v) / len(window) for k, v in summed["values"].items()}
        logged.update(_line_weights(window, tasks))
        logged.update(task_metrics(summed["sums"], tasks))
        logged.update(learning_rate=float(jax.device_get(metrics["values"]["learning_rate"])),
                      samples_per_second=len(window) * config.batch_size
                      / (time.perf_counter() - window_start))
        if not math.isfinite(logged["loss"]):
          raise FloatingPointError(f"non-finite training loss {logged['loss']} at step {step}; "
                                   "lower config.optimizer.learning_rate or check the data")
        if writer:
          writer.write(step, "train", logged)
        progress.set_postfix(loss=f"{logged['loss']:.4f}",
                             samples_per_s=f"{logged['samples_per_second']:.0f}")
        window, window_start = [], time.perf_counter()
      validation = None
      if step % config.eval_every_steps == 0 or step == config.total_steps:
        validation = _evaluate_splits(config, driver, tasks, state, readers,
                                      config.eval_splits[:1])[config.eval_splits[0]]
        if writer:
          writer.write(step, config.eval_splits[0], validation)
        if lead:
          progress.write(f"step {step}: {config.eval_splits[0]} {_format(validation)}")
      if (validation is not None or step % config.checkpoint_every_steps == 0
          or step == last_step):
        checkpoint.save(manager, state, validation)
  manager.wait_until_finished()
  manager.close()

  if int(state.step) < config.total_steps:
    if writer:
      writer.close()
    return {}
  results = {split: _flatten_single_task(metrics, tasks)
             for split, metrics in _evaluate_splits(config, driver, tasks, state, readers,
                                                    config.eval_splits).items()}
  if not lead:
    return results
  for split, metrics in results.items():
    writer.write(int(state.step), f"final_{split}", metrics)
  writer.close()
  _write_results(os.path.join(workdir, "results.json"), int(state.step), results)
  print("mmjax: final " + "; ".join(f"{split}: {_format(metrics)}"
                                     for split, metrics in results.items()))
  return results


def restore_checkpoint(config: Any, workdir: str, step: Optional[int] = None):
  """`(readers, tasks, driver, state)` of `config`, the state being the one saved at `step` (the
  latest when None) in `workdir`, placed on the driver's devices."""
  readers, tasks, driver, state, _ = _setup(config)
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric,
                                          config.checkpoint.best_mode, read_only=True)
  restored = checkpoint.restore(manager, state, step)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                            "run `mmjax train` with this --workdir first")
  return readers, tasks, driver, restored


def evaluate_checkpoint(config: Any, workdir: str, step: Optional[int] = None,
                        robustness: bool = False) -> Dict[str, Any]:
  """Evaluates the checkpoint at `step` (the latest when None) on `config.eval_splits` and writes
  `eval_results.json` beside it; with `robustness`, also the robustness curves on the last eval
  split (`evaluate_robustness`) and their plot, `robustness.png`."""
  readers, tasks, driver, restored = restore_checkpoint(config, workdir, step)
  results = {split: _flatten_single_task(metrics, tasks) for split, metrics in
             _evaluate_splits(config, driver, tasks, restored, readers, config.eval_splits).items()}
  if robustness:
    results["robustness"] = evaluate_robustness(config, driver, tasks, restored, readers)
  if jax.process_index() == 0:
    _write_results(os.path.join(workdir, "eval_results.json"), int(restored.step), results)
    if robustness:
      plot_robustness(results["robustness"], os.path.join(workdir, "robustness.png"))
  return {"step": int(restored.step), **results}


def evaluate_robustness(config: Any, driver: Any, tasks: Mapping[str, Any], state: Any,
                        readers: Mapping[str, Any]) -> Dict[str, Any]:
  """Each task's primary metric on the last eval split with each modality missing, and under
  each of its perturbations at every level, with each curve's area (`mmjax/robustness.py`).
  The split's batches are held in memory; σ and the means come from this process's rows."""
  split = config.eval_splits[-1]
  clean = list(data.eval_batches(readers[split], config.eval_batch_size,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count()))
  metrics = [f"{name}/{task.primary_metric}" for name, task in tasks.items()]
  score = lambda batches: (lambda found: {m: found[m] for m in metrics})(evaluate(
      driver.evaluate, state, _local_batches(driver, batches), tasks))
  report: Dict[str, Any] = {"split": split, "levels": list(robustness.LEVELS),
                            "clean": score(clean), "missing": {}, "curves": {}, "area": {}}
  for modality in config.model.encoders:
    report["missing"][modality] = score([robustness.missing(b, modality) for b in clean])
    stats = robustness.modality_stats(clean, modality)
    kind = robustness.modality_kind(clean[0][modality])
    report["curves"][modality], report["area"][modality] = {}, {}
    for name in robustness.PERTURBATIONS[kind]:
      curve = [score(robustness.perturbed(clean, modality, name, level, config.seed, stats))
               for level in robustness.LEVELS]
      report["curves"][modality][name] = {m: [point[m] for point in curve] for m in metrics}
      report["area"][modality][name] = {m: robustness.area(robustness.LEVELS,
                                                           report["curves"][modality][name][m])
                                        for m in metrics}
  return report


def plot_robustness(report: Mapping[str, Any], path: str) -> None:
  """One panel per modality: the first task's primary metric against the level, one line per
  perturbation, the modality-missing value dashed."""
  import matplotlib   # only `mmjax eval --robustness` needs it (the `bench` extra)
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  modalities = list(report["curves"])
  metric = next(iter(report["clean"]))
  figure, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 3.5),
                              squeeze=False)
  for axis, modality in zip(axes[0], modalities):
    for name, curve in report["curves"][modality].items():
      axis.plot(report["levels"], curve[metric], marker="o",
                label=f"{name} (area {report['area'][modality][name][metric]:.3f})")
    axis.axhline(report["missing"][modality][metric], linestyle="--", color="grey",
                 label="missing")
    axis.set(title=modality, xlabel="level", ylabel=metric)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
