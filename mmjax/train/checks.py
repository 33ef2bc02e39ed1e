"""Every check the trainer makes before it compiles anything, each failing with one line that
names the field or file and the fix (`mmjax/errors.py`): the config against itself, the dataset
and the model; the workdir (writable, and holding no other config's run); and every batch against
the one the model was built for (keys, shapes, dtypes, label and token ranges)."""
import json
import os
import re
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import jax
import numpy as np

from mmjax.errors import ConfigError, DataError, WorkdirError
from mmjax.model import check_inputs
from mmjax.tasks import kinds
from mmjax.tasks.objective import is_shared, parameter_path
from mmjax.tasks.weighting import GradNorm
from mmjax.train import parallel
from mmjax.train.defaults import trainer_config

NONFINITE_POLICIES = ("stop", "skip")   # config.on_nonfinite


def check_step_counts(config: Any) -> None:
  """Raises ConfigError for a batch size or step interval that is not positive, or that does not
  split over the devices and micro-batches, and for an unknown driver, non-finite policy or EMA
  decay outside [0, 1)."""
  positive = ("batch_size", "eval_batch_size", "total_steps", "log_every_steps",
              "checkpoint_every_steps", "grad_accum_steps")
  for field in positive:
    if config[field] <= 0:
      raise ConfigError(f"config.{field}={config[field]} must be positive")
  if config.parallel.driver not in parallel.DRIVERS:
    raise ConfigError(f"config.parallel.driver={config.parallel.driver!r}; use one of "
                      f"{', '.join(parallel.DRIVERS)}")
  if config.on_nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"config.on_nonfinite={config.on_nonfinite!r}; use one of "
                      f"{', '.join(NONFINITE_POLICIES)}")
  start, stop = config.profile_steps
  if (start, stop) != (0, 0) and not 0 < start <= stop <= config.total_steps:
    raise ConfigError(f"config.profile_steps=({start}, {stop}) must be steps 0 < start <= stop <= "
                      f"total_steps={config.total_steps}, or (0, 0) for no profile")
  if not 0 <= config.ema_decay < 1:
    raise ConfigError(f"config.ema_decay={config.ema_decay} must lie in [0, 1); 0 keeps no EMA")
  if config.dataset.train_examples < 0:
    raise ConfigError(f"config.dataset.train_examples={config.dataset.train_examples} must be "
                      "positive, or 0 for the whole split")
  if config.dataset.train_examples and any(c in config.dataset.train_split for c in "[+"):
    raise ConfigError(f"config.dataset.train_examples={config.dataset.train_examples} with "
                      f"config.dataset.train_split={config.dataset.train_split!r}: slice one "
                      "split by one of them, not both")
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


def _out_of_range(value: Any, low: float, high: float, low_open: bool, high_open: bool) -> bool:
  return (value < low or (low_open and value == low) or value > high
          or (high_open and value == high))


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
  if high == float("inf"):
    return f"{'>' if low_open else '>='} {low:g}"
  return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


# (field, low, high, low open, high open): the values a run can train with.
OPTIMIZER_RANGES = (("learning_rate", 0, float("inf"), True, True),
                    ("warmup_steps", 0, float("inf"), False, True),
                    ("final_lr_fraction", 0, 1, False, False),
                    ("grad_clip_norm", 0, float("inf"), False, True),
                    ("b1", 0, 1, False, True), ("b2", 0, 1, False, True),
                    ("eps", 0, float("inf"), True, True),
                    ("weight_decay", 0, float("inf"), False, True))


def check_value_ranges(config: Any) -> None:
  """Raises ConfigError for a value outside the range it can train with: the optimizer's
  (`OPTIMIZER_RANGES`: a positive learning rate and eps, b1 and b2 in [0, 1), the rest ≥ 0 or a
  fraction), `shared_weight_decay` and `max_skipped_steps` ≥ 0, every dropout rate of the model
  (any field whose name holds 'dropout') in [0, 1), and each task's weight ≥ 0 and multi-label
  threshold in (0, 1)."""
  for field, low, high, low_open, high_open in OPTIMIZER_RANGES:
    value = config.optimizer[field]
    if _out_of_range(value, low, high, low_open, high_open):
      raise ConfigError(f"config.optimizer.{field}={value} must be "
                        f"{_interval(low, high, low_open, high_open)}")
  for field in ("shared_weight_decay", "max_skipped_steps"):
    if config[field] < 0:
      raise ConfigError(f"config.{field}={config[field]} must be >= 0")
  specs = {f"model.encoders.{m}": spec for m, spec in config.model.encoders.items()}
  specs.update({"model.fusion": config.model.fusion})
  specs.update({f"model.heads.{t}": spec for t, spec in config.model.heads.items()})
  for where, spec in specs.items():
    for field, value in spec.items():
      if ("dropout" in field and isinstance(value, (int, float)) and not isinstance(value, bool)
          and not 0 <= value < 1):
        raise ConfigError(f"config.{where}.{field}={value} must be in [0, 1)")
  for name, spec in config.tasks.items():
    if spec.get("weight", 1.0) < 0:
      raise ConfigError(f"config.tasks.{name}.weight={spec['weight']} must be >= 0")
    if "threshold" in spec and not 0 < spec["threshold"] < 1:
      raise ConfigError(f"config.tasks.{name}.threshold={spec['threshold']} must be in (0, 1)")


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
    if task.modality is not None and task.modality not in config.model.encoders:
      raise ConfigError(f"config.tasks.{name}.modality={task.modality!r} is not one of the "
                        f"encoders {sorted(config.model.encoders)}; name one of them")
    if head.get("name") == "unimodal" and task.modality != head.get("modality"):
      raise ConfigError(f"task {name!r} has a unimodal head on {head.get('modality')!r} but "
                        f"config.tasks.{name}.modality={task.modality!r}; set it to "
                        f"{head.get('modality')!r}, so that examples without that modality "
                        "count nowhere in the task")
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


def check_weighting(weighting: Any, params: Any) -> None:
  """Raises ConfigError when GradNorm's `layer` regex names no shared parameter."""
  if isinstance(weighting, GradNorm):
    paths = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    shared = [p for p in paths if is_shared(p.split("/")[0])]
    if not any(re.search(weighting.layer, p) for p in shared):
      raise ConfigError(f"config.task_weighting.layer={weighting.layer!r} matches no shared "
                        f"parameter; they are e.g. {', '.join(shared[:4])}")


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` if needed; WorkdirError when it is empty, a file, or not writable."""
  if not workdir or not workdir.strip():
    raise WorkdirError("--workdir is empty; give the directory for checkpoints, metrics and "
                       "results, e.g. --workdir runs/my_run")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir {workdir} is a file; give a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
      pass
  except OSError as error:
    raise WorkdirError(f"--workdir {workdir} is not writable ({error.strerror}); choose a "
                       "directory you can write to") from error


# Fields that may differ between a run and its resumption: they change how often things are
# logged, evaluated and saved, where data is read from, and how the same update is spread over
# devices (the same up to float summation order; dropout masks differ between drivers), not
# what is trained. `total_steps` lengthens the run: the learning-rate schedule is recomputed for
# the new length, so the steps after the resume follow the new schedule.
RESUMABLE_CHANGES = ("total_steps", "log_every_steps", "evals",
                     "checkpoint_every_steps", "eval_batch_size", "init_from",
                     "on_nonfinite", "max_skipped_steps", "checkpoint.keep_best",
                     "dataset.data_dir", "dataset.manual_dir", "dataset.cache", "parallel",
                     "profile_steps", "checkpoint.best_metric",
                     # configs written before config.evals: evaluation only
                     "eval_splits", "eval_every_steps")
# How a contrastive task spreads its logits over devices: the same numbers (up to float summation
# order) in any layout, so neither resuming nor evaluating compares them.
COMPUTATION_ONLY = re.compile(r"tasks\.[^.]+\.(layout|chunk_size)")
# What `mmjax eval` compares: what makes the checkpoint's numbers mean what they meant.
EVALUATED_FIELDS = ("model", "tasks", "task_weighting", "dataset.name", "dataset.options")
CONFIG_FILE = "config.json"


def field_paths(tree: Any, prefix: str = "") -> Dict[str, Any]:
  """`{'a.b': value}` for every leaf of a nested dict or ConfigDict, in its order (an empty
  mapping is a leaf)."""
  if not hasattr(tree, "items"):
    return {prefix[:-1]: tree}
  paths = {}
  for key, value in tree.items():
    paths.update(field_paths(value, f"{prefix}{key}."))
  return paths or {prefix[:-1]: {}}


def _as_json(config: Any) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _within(field: str, prefixes: Iterable[str]) -> bool:
  return any(field == p or field.startswith(p + ".") for p in prefixes)


def config_changes(workdir: str, config: Any) -> List[Tuple[str, Any, Any]]:
  """`(field, stored value, new value)` for every field whose value differs between `config`
  and the one stored in `workdir` by the run that wrote it ('(absent)' for a missing field);
  none when the workdir stores no config, and none in a contrastive task's layout and chunk size
  (`COMPUTATION_ONLY`). A trainer field the stored config lacks (one added to
  mmjax since that run) is no change while it keeps its default, so such runs still resume."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as file:
    stored = field_paths(json.load(file))
  current = field_paths(_as_json(config))
  for field, default in field_paths(_as_json(trainer_config(""))).items():
    if not any(_within(f, (field,)) for f in stored):   # a filled default group: options.*
      stored[field] = default
  missing = "(absent)"
  return [(field, stored.get(field, missing), current.get(field, missing))
          for field in sorted(set(stored) | set(current))
          if stored.get(field, missing) != current.get(field, missing)
          and not COMPUTATION_ONLY.fullmatch(field)]


def check_resumable(workdir: str, config: Any, compared: Optional[Iterable[str]] = None) -> None:
  """WorkdirError when `config` differs from the config stored in `workdir` in a field outside
  `RESUMABLE_CHANGES` (or, with `compared`, in a field within those)."""
  changes = config_changes(workdir, config)
  if compared is None:
    bad = [c for c in changes if not _within(c[0], RESUMABLE_CHANGES)]
    allowed = ", ".join(RESUMABLE_CHANGES)
  else:
    bad = [c for c in changes if _within(c[0], compared)]
    allowed = "every field but " + ", ".join(compared)
  if bad:
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    shown = "; ".join(f"{field}: {old!r} -> {new!r}" for field, old, new in bad[:3])
    raise WorkdirError(f"--workdir {workdir} holds a run of another config: {shown}{more}; use "
                       f"a new --workdir, or the config that wrote it (fields that may change "
                       f"on resume: {allowed})")


def store_config(workdir: str, config: Any) -> None:
  """Writes `config` as `workdir/config.json` (atomically: a reader never sees half a file)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with tempfile.NamedTemporaryFile("w", dir=workdir, delete=False, suffix=".tmp") as file:
    json.dump(_as_json(config), file, indent=2, sort_keys=True)
  os.replace(file.name, path)


class BatchCheck:
  """Checks each batch against the batch the model was built for, before it reaches a compiled
  step: the same keys, per-example shapes and dtypes, `rows` rows; what the model checks of its
  inputs (`mmjax.model.check_inputs`: ranks, masks, token ids within the vocabulary);
  classification labels within the head's classes and multi-label targets within [0, 1] (on
  labelled, non-padding rows). A jitted step would otherwise recompile for a new shape, or
  compute a wrong number silently (a one-hot of an out-of-range class is all zeros)."""

  def __init__(self, config: Any, example: Mapping[str, np.ndarray], tasks: Mapping[str, Any],
               model: Any):
    self._spec = {key: (value.shape[1:], value.dtype) for key, value in example.items()}
    self._encoders = model.encoders
    self._classes = {task.label_key: (name, config.model.heads[name]["num_classes"])
                     for name, task in tasks.items() if isinstance(task, kinds.Classification)}
    self._multilabel = {task.label_key: name for name, task in tasks.items()
                        if isinstance(task, kinds.MultiLabel)}

  def __call__(self, batch: Mapping[str, np.ndarray], where: str, rows: int) -> None:
    """DataError naming `where` (e.g. "batch 37 of split 'train'") for the first problem."""
    missing = sorted(set(self._spec) - set(batch) - {"weight"})   # train batches have no padding
    if missing:
      raise DataError(f"{where} lacks {missing}, which the model was built with; every batch "
                      "must hold the same keys")
    for key, (shape, dtype) in self._spec.items():
      if key not in batch:
        continue
      value = batch[key]
      if value.shape != (rows, *shape) or value.dtype != dtype:
        raise DataError(f"{where}: {key!r} has shape {value.shape} and dtype {value.dtype}, but "
                        f"the model was built for {(rows, *shape)} {dtype}; every example "
                        "must have the shapes and dtypes of the first")
    try:
      check_inputs(batch, self._encoders)
    except DataError as error:
      raise DataError(f"{where}: {error}") from error
    real = np.asarray(batch["weight"]) > 0 if "weight" in batch else np.ones(rows, bool)
    for label_key, (name, classes) in self._classes.items():
      labelled = self._labelled(batch, label_key, real)
      labels = np.asarray(batch[label_key])
      bad = np.flatnonzero(labelled & ((labels < 0) | (labels >= classes)))
      if len(bad):
        raise DataError(f"{where}: {label_key!r} holds class {labels[bad[0]]} at row {bad[0]}, "
                        f"outside task {name!r}'s {classes} classes [0, {classes}); fix the "
                        f"labels or config.model.heads.{name}.num_classes")
    for label_key, name in self._multilabel.items():
      labelled = self._labelled(batch, label_key, real)
      targets = np.asarray(batch[label_key])
      bad = np.argwhere(labelled[:, None] & ((targets < 0) | (targets > 1)))
      if len(bad):
        raise DataError(f"{where}: {label_key!r} holds {targets[tuple(bad[0])]} at "
                        f"{tuple(int(i) for i in bad[0])}; task {name!r} is multi-label and "
                        "takes targets in [0, 1]")

  @staticmethod
  def _labelled(batch: Mapping[str, np.ndarray], label_key: str, real: np.ndarray) -> np.ndarray:
    mask = batch.get(f"{label_key}_mask")
    return real if mask is None else real & (np.asarray(mask) > 0)

  def batches(self, batches: Iterable[Mapping[str, np.ndarray]], name: Callable[[int], str],
              rows: int) -> Iterator[Mapping[str, np.ndarray]]:
    """`batches`, each checked; `name(i)` says where the i-th one comes from."""
    for index, batch in enumerate(batches):
      self(batch, name(index), rows)
      yield batch
