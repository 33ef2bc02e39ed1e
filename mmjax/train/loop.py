"""The trainer: config -> data -> model -> state -> resume -> steps -> evals -> results.json.

One linear function a reader follows top to bottom. Every problem in the config is reported in one
line before anything is compiled.
"""
import functools
import json
import math
import os
import time
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np
from tqdm import tqdm

from mmjax import data
from mmjax.model import model_from_config
from mmjax.tasks.objective import means_from_sums, tasks_from_config
from mmjax.train import checkpoint
from mmjax.train.metrics_writer import MetricsWriter
from mmjax.train.state import create_train_state, make_optimizer, parameter_count
from mmjax.train.step import eval_step, evaluate, train_step


class ConfigError(ValueError):
  """A config that cannot work, found before compilation."""


def check_step_counts(config: Any) -> None:
  """Raises ConfigError for a batch size or step interval that is not positive."""
  positive = ("batch_size", "eval_batch_size", "total_steps", "log_every_steps",
              "eval_every_steps", "checkpoint_every_steps")
  for field in positive:
    if config[field] <= 0:
      raise ConfigError(f"config.{field}={config[field]} must be positive")


def check_config(config: Any, builder: Any, batch: Mapping[str, np.ndarray]) -> None:
  """Raises ConfigError naming the first field that cannot work with this dataset."""
  for modality, spec in config.model.encoders.items():
    if modality not in batch:
      raise ConfigError(f"config.model.encoders has {modality!r} but dataset {builder.name!r} "
                        f"batches have only {sorted(batch)}; rename or remove that encoder")
    vocab_size = builder.info.metadata.get("vocabulary_size") if builder.info.metadata else None
    if "vocab_size" in spec and vocab_size and spec["vocab_size"] < vocab_size:
      raise ConfigError(f"config.model.encoders.{modality}.vocab_size={spec['vocab_size']} is "
                        f"smaller than the dataset's vocabulary ({vocab_size}); raise it")
  for task, spec in config.tasks.items():
    label_key = spec.get("label_key", task)
    if task not in config.model.heads:
      raise ConfigError(f"config.tasks has {task!r} but config.model.heads does not; add a head "
                        f"named {task!r}")
    if label_key not in batch:
      raise ConfigError(f"task {task!r} reads labels {label_key!r}, which dataset "
                        f"{builder.name!r} lacks; its keys are {sorted(batch)}")
    feature = builder.info.features[label_key]
    head_classes = config.model.heads[task].get("num_classes")
    if hasattr(feature, "num_classes") and head_classes != feature.num_classes:
      raise ConfigError(f"config.model.heads.{task}.num_classes={head_classes} but {label_key!r} "
                        f"has {feature.num_classes} classes; set it to {feature.num_classes}")
  best_metric = config.checkpoint.best_metric
  if best_metric != "loss" and best_metric.split("/")[0] not in config.tasks:
    raise ConfigError(f"config.checkpoint.best_metric={best_metric!r} names no task; use 'loss' "
                      f"or '<task>/accuracy' or '<task>/loss' with a task from {sorted(config.tasks)}")


def _setup(config: Any):
  """Data readers, the model, its tasks and an initial train state (shared by train and eval)."""
  check_step_counts(config)
  builder = data.prepare(config.dataset.name, config.dataset.data_dir)
  splits = {config.dataset.train_split, *config.eval_splits}
  missing = splits - set(builder.info.splits)
  if missing:
    raise ConfigError(f"splits {sorted(missing)} are not in dataset {builder.name!r}; its splits "
                      f"are {sorted(builder.info.splits)}")
  readers = {split: data.ExampleReader(builder, split, config.dataset.cache_in_memory)
             for split in splits}
  example_batch = next(data.eval_batches(readers[config.dataset.train_split],
                                         config.batch_size))
  check_config(config, builder, example_batch)
  model = model_from_config(config.model)
  tasks = tasks_from_config(config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(model, tx, example_batch, init_rng)
  return readers, tasks, schedule, state, step_rng


def _evaluate_splits(config, eval_fn, state, readers, splits) -> Dict[str, Dict[str, float]]:
  return {split: evaluate(eval_fn, state, data.eval_batches(readers[split],
                                                            config.eval_batch_size))
          for split in splits}


def _write_results(path: str, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
  """`{"step": step, split: {metric: value}}` as JSON."""
  with open(path, "w") as file:
    json.dump({"step": step, **results}, file, indent=2, sort_keys=True)


def _flatten_single_task(metrics: Dict[str, float], tasks) -> Dict[str, float]:
  """With one task, its accuracy is also reported as plain `accuracy` (`loss` is the total)."""
  if len(tasks) != 1:
    return metrics
  (task,) = tasks
  return {**metrics, "accuracy": metrics[f"{task}/accuracy"]}


def train_and_evaluate(config: Any, workdir: str, *,
                       stop_after_step: Optional[int] = None) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and writes results.json.

  `stop_after_step` ends the run early after saving a checkpoint at that step, as a preempted
  job would; calling again resumes exactly where it stopped. Returns the final results (empty
  when stopped early).
  """
  os.makedirs(workdir, exist_ok=True)
  readers, tasks, schedule, state, step_rng = _setup(config)
  print(f"mmjax: {parameter_count(state.params):,} parameters; dataset {config.dataset.name}; "
        f"workdir {workdir}")

  # Checkpoints: resume from the latest one.
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric, config.checkpoint.best_mode)
  restored = checkpoint.restore(manager, state)
  if restored is not None:
    state = restored
    print(f"mmjax: resumed from step {int(state.step)}")
  start_step = int(state.step)

  # Steps: one pure function, jit-compiled with the state's buffers donated.
  train_fn = jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule),
                     donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  batches = data.train_batches(readers[config.dataset.train_split], config.batch_size,
                               seed=config.seed, start_step=start_step)
  writer = MetricsWriter(workdir)
  last_step = config.total_steps if stop_after_step is None else min(stop_after_step,
                                                                     config.total_steps)
  window, window_start = [], time.perf_counter()
  with tqdm(total=config.total_steps, initial=start_step, desc="train", unit="step",
            dynamic_ncols=True) as progress:
    for step in range(start_step + 1, last_step + 1):
      state, metrics = train_fn(state, next(batches), step_rng)
      window.append(metrics)
      progress.update(1)
      if step % config.log_every_steps == 0 or step == last_step:
        summed = jax.device_get(functools.reduce(
            lambda a, b: jax.tree.map(np.add, a, b), window))
        logged = means_from_sums({k: v for k, v in summed.items()
                                  if k not in ("grad_norm", "learning_rate")})
        elapsed = time.perf_counter() - window_start
        logged.update(grad_norm=float(summed["grad_norm"]) / len(window),
                      learning_rate=float(jax.device_get(metrics["learning_rate"])),
                      samples_per_second=len(window) * config.batch_size / elapsed)
        if not math.isfinite(logged["loss"]):
          raise FloatingPointError(f"non-finite training loss {logged['loss']} at step {step}; "
                                   "lower config.optimizer.learning_rate or check the data")
        writer.write(step, "train", logged)
        progress.set_postfix(loss=f"{logged['loss']:.4f}",
                             samples_per_s=f"{logged['samples_per_second']:.0f}")
        window, window_start = [], time.perf_counter()
      validation = None
      if step % config.eval_every_steps == 0 or step == config.total_steps:
        validation = _evaluate_splits(config, eval_fn, state, readers,
                                      config.eval_splits[:1])[config.eval_splits[0]]
        writer.write(step, config.eval_splits[0], validation)
        progress.write(f"step {step}: {config.eval_splits[0]} "
                       + ", ".join(f"{k}={v:.4f}" for k, v in validation.items()))
      if (validation is not None or step % config.checkpoint_every_steps == 0
          or step == last_step):
        checkpoint.save(manager, state, validation)
  manager.wait_until_finished()
  manager.close()

  if int(state.step) < config.total_steps:
    writer.close()
    return {}
  results = {split: _flatten_single_task(metrics, tasks)
             for split, metrics in _evaluate_splits(config, eval_fn, state, readers,
                                                    config.eval_splits).items()}
  for split, metrics in results.items():
    writer.write(int(state.step), f"final_{split}", metrics)
  writer.close()
  _write_results(os.path.join(workdir, "results.json"), int(state.step), results)
  print("mmjax: final " + "; ".join(
      f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
      for split, metrics in results.items()))
  return results


def evaluate_checkpoint(config: Any, workdir: str, step: Optional[int] = None) -> Dict[str, Any]:
  """Evaluates the checkpoint at `step` (the latest when None) on `config.eval_splits` and writes
  `eval_results.json` beside it."""
  readers, tasks, _, state, _ = _setup(config)
  manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep_best,
                                          config.checkpoint.best_metric,
                                          config.checkpoint.best_mode, read_only=True)
  restored = checkpoint.restore(manager, state, step)
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; "
                            "run `mmjax train` with this --workdir first")
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  results = {split: _flatten_single_task(metrics, tasks) for split, metrics in
             _evaluate_splits(config, eval_fn, restored, readers, config.eval_splits).items()}
  _write_results(os.path.join(workdir, "eval_results.json"), int(restored.step), results)
  return {"step": int(restored.step), **results}
