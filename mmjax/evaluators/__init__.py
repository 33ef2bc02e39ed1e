"""Evaluators: what a run measures besides training, each one file and one registry entry.

`config.evals` maps a key to an evaluator's config (`evaluator_config(name, **fields)`): its
registry `name`, the `split` it reads, `every_steps` (it runs at every multiple of it during
training, 0 = never; every evaluator runs at the end of training), and its own fields. An
evaluator is a frozen dataclass with

    check(config, tasks)          raise ConfigError, before anything is compiled, on what cannot work
    splits() -> (split, ...)      the splits it reads (the trainer opens them)
    unselectable(metric, tasks)   why `<key>/<metric>` cannot select checkpoints, or None
    check_data(builder, batch)    (optional) ConfigError on what the dataset cannot give it
    run(context, state) -> dict   its results on the state (`Context`: `mmjax/evaluators/context.py`)

The trainer logs `<key>/<metric>` (metrics.jsonl, TensorBoard) and writes every evaluator's final
results to results.json under its key; `mmjax eval` runs them all on a checkpoint
(eval_results.json), `mmjax analyze` runs the `interactions` and `pid` ones (analysis.json).
`config.checkpoint.best_metric = "<key>/<metric>"` selects checkpoints by any scalar an evaluator
reports. The default `config.evals` is `metrics` on 'validation' (every 250 steps) and on 'test'
(at the end), keyed by their splits. To add an evaluator: one file here, and one import and entry
below.
"""
import time
from typing import Any, Dict, Mapping, Sequence, Tuple

import ml_collections

from mmjax import registry
from mmjax.errors import ConfigError
from mmjax.evaluators.interactions import Interactions
from mmjax.evaluators.linear_probe import LinearProbe
from mmjax.evaluators.metrics import Metrics
from mmjax.evaluators.modality_subsets import ModalitySubsets
from mmjax.evaluators.pid import Pid
from mmjax.evaluators.retrieval import Retrieval
from mmjax.evaluators.robustness import Robustness
from mmjax.evaluators.zero_shot import ZeroShot

EVALUATORS = {
    "metrics": Metrics,
    "retrieval": Retrieval,
    "linear_probe": LinearProbe,
    "robustness": Robustness,
    "modality_subsets": ModalitySubsets,
    "interactions": Interactions,
    "pid": Pid,
    "zero_shot": ZeroShot,
}


def evaluator_config(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """The config of evaluator `name`, every field listed (`fields` where given, its defaults
  elsewhere), so that `--config.evals.KEY.FIELD=VALUE` works for each."""
  return registry.spec(EVALUATORS, name, "evaluator", **fields)


def metrics_evals(splits: Sequence[str], every_steps: int = 0) -> ml_collections.ConfigDict:
  """`config.evals` with a `metrics` evaluator per split, keyed by the split: the first every
  `every_steps` steps, the others at the end."""
  return ml_collections.ConfigDict({
      split: evaluator_config("metrics", split=split, every_steps=every_steps if i == 0 else 0)
      for i, split in enumerate(splits)})


def report_split(evals: Mapping[str, Any]) -> str:
  """The split `mmjax predict`, and `mmjax eval --robustness` and `mmjax analyze` without a
  configured evaluator, read by default: 'test' where an evaluator reads it, else the split of
  the first evaluator (config keys are in sorted order)."""
  splits = [spec["split"] for spec in evals.values()]
  return "test" if "test" in splits else splits[0]


def evaluators_from_config(evals: Mapping[str, Any], config: Any,
                           tasks: Mapping[str, Any]) -> Dict[str, Any]:
  """`{key: evaluator}` of `config.evals`, each checked (`check`); a bad name, field or value is
  a ConfigError naming it."""
  built = {}
  for key, spec in evals.items():
    if "/" in key:
      raise ConfigError(f"config.evals.{key}: an evaluator's key cannot contain '/'")
    try:
      built[key] = registry.build(EVALUATORS, spec, "evaluator")
    except ValueError as error:
      raise ConfigError(f"config.evals.{key}: {error}") from error
    if built[key].every_steps < 0:
      raise ConfigError(f"config.evals.{key}.every_steps={built[key].every_steps}; use 0 (only "
                        "at the end) or a positive number of steps")
    built[key].check(config, tasks)
  return built


def check_data(evaluators: Mapping[str, Any], builder: Any, batch: Mapping[str, Any]) -> None:
  """Each evaluator's `check_data` (those that have one) on the dataset and its first batch."""
  for evaluator in evaluators.values():
    if hasattr(evaluator, "check_data"):
      evaluator.check_data(builder, batch)


def check_best_metric(best_metric: str, evaluators: Mapping[str, Any],
                      tasks: Mapping[str, Any]) -> None:
  """ConfigError unless `best_metric` is `<key>/<metric>` of a scalar an evaluator reports."""
  key, _, metric = best_metric.partition("/")
  where = f"config.checkpoint.best_metric={best_metric!r}"
  if key not in evaluators or not metric:
    metric_keys = [k for k, e in evaluators.items() if isinstance(e, Metrics)]
    example = "validation" if "validation" in metric_keys or not metric_keys else metric_keys[0]
    raise ConfigError(f"{where}: use '<evaluator>/<metric>' with an evaluator of config.evals "
                      f"({', '.join(evaluators)}), e.g. '{example}/{next(iter(tasks), 'label')}/"
                      "accuracy'")
  reason = evaluators[key].unselectable(metric, tasks)
  if reason:
    raise ConfigError(f"{where}: config.evals.{key} cannot select checkpoints by {metric!r}: "
                      f"{reason}")


def due(evaluators: Mapping[str, Any], step: int, total_steps: int) -> Dict[str, Any]:
  """The evaluators that run after step `step`: those whose `every_steps` divides it, and all at
  the last step."""
  return {key: evaluator for key, evaluator in evaluators.items()
          if step == total_steps or (evaluator.every_steps and step % evaluator.every_steps == 0)}


def scalars(results: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
  """`{"a/b/c": number}` for every number in nested `results` (lists left out): what is logged
  and what checkpoints are selected by."""
  found = {}
  for name, value in results.items():
    if isinstance(value, Mapping):
      found.update(scalars(value, f"{prefix}{name}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      found[f"{prefix}{name}"] = value
  return found


def run_all(evaluators: Mapping[str, Any], context: Any, state: Any
            ) -> Tuple[Dict[str, Any], Dict[str, float]]:
  """`({key: results}, {key: seconds})` of running each evaluator on `state`."""
  results, seconds = {}, {}
  for key, evaluator in evaluators.items():
    start = time.perf_counter()
    results[key] = evaluator.run(context, state)
    seconds[key] = time.perf_counter() - start
  return results, seconds
