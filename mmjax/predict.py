"""Per-example predictions of a checkpoint on a split, for error analysis.

`mmjax predict --config ... --workdir DIR [--step N] [--split test | --input TABLE] [--out FILE]`
writes one record per real example of the split (padding rows of the last batch left out), in
the split's order, to `FILE` (default `DIR/predictions_<split>.jsonl`; a name ending in `.csv`
writes CSV, a column per field, lists as JSON). `--input TABLE` predicts instead on new inputs of
a run trained on `multimodal_folder`: a CSV or JSONL table in the format of its training tables
(media paths relative to the table; label columns optional), preprocessed as the dataset was
(its image size, text length and training vocabulary, audio statistics, classes), one record per
row in order (default `DIR/predictions_<table name>.jsonl`):

    {"index": i, "<task>": {...}, ...}

with, per task kind (`TaskKind.predictions`, as `mmjax export` outputs):

- classification: `probabilities` (K), `top_k` (the `top_k` most probable classes, ties by
  index), `label` where the example has one;
- multilabel: `scores` σ(z) (K), `predicted` (the classes with σ(z) ≥ threshold), `label`;
- regression: `value` (D values in the targets' units; a number when D = 1), `label`;
- contrastive: `a`, `b` (the normalised embeddings).

A label is "had" when the task's `<label_key>_mask` is True (or absent). The parameters are the
EMA's where kept, as evaluation uses; the batches are split over the run's devices as evaluation
splits them, and the records are the same on 1 or N devices (tested to float32 rounding).
"""
import csv
import json
import os
from typing import Any, Dict, List, Mapping, Optional

import jax
import numpy as np

from mmjax import evaluators
from mmjax.errors import ConfigError
from mmjax.tasks import kinds
from mmjax.tasks.objective import task_predictions
from mmjax.train.state import evaluation_params


def _numbers(values: Any) -> Any:
  return np.asarray(values).tolist()


def _record(task: Any, prediction: Any, batch: Mapping[str, np.ndarray], row: int,
            top_k: int) -> Dict[str, Any]:
  """One example's fields for `task` (module docstring)."""
  if isinstance(task, kinds.Contrastive):
    return {"a": _numbers(prediction["a"][row]), "b": _numbers(prediction["b"][row])}
  values = np.asarray(prediction[row])
  if isinstance(task, kinds.Classification):
    order = np.argsort(-values, kind="stable")[:top_k]
    record = {"probabilities": _numbers(values), "top_k": _numbers(order)}
  elif isinstance(task, kinds.MultiLabel):
    record = {"scores": _numbers(values),
              "predicted": _numbers(np.flatnonzero(values >= task.threshold))}
  else:
    record = {"value": _numbers(values[0] if values.size == 1 else values)}
  mask = batch.get(f"{task.label_key}_mask")
  if task.label_key in batch and (mask is None or bool(mask[row])):
    label = np.asarray(batch[task.label_key][row])
    record["label"] = _numbers(label)
  return record


def _padded_batches(batch: Mapping[str, np.ndarray], size: int):
  """`batch` (new inputs, N rows) in batches of `size`, the last padded as `data.eval_batches`
  pads a split (`padded_rows`)."""
  from mmjax.data.pipeline import padded_rows
  count = len(next(iter(batch.values())))
  for start in range(0, count, size):
    padded, weight = padded_rows(np.arange(start, min(start + size, count)), size)
    yield {**{key: np.asarray(value)[padded] for key, value in batch.items()}, "weight": weight}


def new_inputs(config: Any, reader: Any, path: str) -> Dict[str, np.ndarray]:
  """The table at `path` as a model batch, preprocessed as the run's `multimodal_folder` dataset
  (`multimodal_folder.encode_table`); a ConfigError for another dataset or a bad table."""
  from mmjax.data import multimodal_folder
  if config.dataset.name != "multimodal_folder":
    raise ConfigError(f"--input reads a table in the multimodal_folder format, but this run's "
                      f"dataset is {config.dataset.name!r}; predict on one of its splits with "
                      "--split")
  try:
    return multimodal_folder.encode_table(path, reader.builder.builder_config,
                                          reader.builder.info.metadata)
  except ValueError as error:
    raise ConfigError(f"--input {path}: {error}") from error


def predict_records(config: Any, workdir: str, step: Optional[int] = None,
                    split: Optional[str] = None, top_k: int = 5,
                    inputs: Optional[str] = None) -> List[Dict[str, Any]]:
  """The records of the checkpoint at `step` (the latest when None) on `split`
  (`evaluators.report_split` when None), or on the new inputs of the table `inputs`."""
  from mmjax import data   # the trainer and the datasets, imported when predicting
  from mmjax.train import loop
  if jax.process_count() > 1:
    raise ConfigError("mmjax predict runs in one process (it writes every record itself); run "
                      "it without --distributed, on one host's devices")
  split = split or evaluators.report_split(config.evals)
  readers, tasks, driver, state = loop.restore_checkpoint(config, workdir, step)[:4]
  if split not in readers:   # the splits the run reads: its train split and its evaluators'
    raise ConfigError(f"--split {split!r} is not one of the run's splits {sorted(readers)}; add "
                      "an evaluator on it to config.evals")
  params = evaluation_params(state)

  @jax.jit
  def predict(params, batch):
    return task_predictions(state.apply_fn({"params": params}, batch, train=False), tasks)

  batches = (data.eval_batches(readers[split], config.eval_batch_size) if inputs is None else
             _padded_batches(new_inputs(config, readers[loop.train_split(config)], inputs),
                             config.eval_batch_size))
  records, index = [], 0
  for batch in batches:
    found = jax.device_get(predict(params, driver.put_batch(batch)))
    for row in np.flatnonzero(batch["weight"] > 0):
      records.append({"index": index, **{name: _record(task, found[name], batch, row, top_k)
                                         for name, task in tasks.items()}})
      index += 1
  return records


def _flat(record: Mapping[str, Any]) -> Dict[str, Any]:
  """A record as CSV columns `<task>/<field>`, lists as JSON."""
  row = {"index": record["index"]}
  for task, fields in record.items():
    if task != "index":
      row.update({f"{task}/{name}": json.dumps(value) if isinstance(value, list) else value
                  for name, value in fields.items()})
  return row


def write_predictions(records: List[Mapping[str, Any]], path: str) -> str:
  """`records` to `path`: JSON lines, or CSV when it ends in `.csv`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as file:
    if path.endswith(".csv"):
      rows = [_flat(record) for record in records]
      columns = list(dict.fromkeys(key for row in rows for key in row))
      writer = csv.DictWriter(file, fieldnames=columns)
      writer.writeheader()
      writer.writerows(rows)
    else:
      file.writelines(json.dumps(record) + "\n" for record in records)
  return path


def predict_checkpoint(config: Any, workdir: str, step: Optional[int] = None,
                       split: Optional[str] = None, path: Optional[str] = None,
                       top_k: int = 5, inputs: Optional[str] = None) -> str:
  """Writes the predictions file (module docstring); returns its path."""
  if inputs is not None and split is not None:
    raise ConfigError("--split and --input are exclusive: predict on a split of the run's "
                      "dataset or on new inputs")
  split = split or evaluators.report_split(config.evals)
  records = predict_records(config, workdir, step, split, top_k, inputs)
  name = (split if inputs is None
          else os.path.splitext(os.path.basename(inputs))[0])
  return write_predictions(records, path or os.path.join(workdir, f"predictions_{name}.jsonl"))
