"""Per-example predictions of a checkpoint on a split, for error analysis.

`mmjax predict --config ... --workdir DIR [--step N] [--split test] [--out FILE]` writes one
record per real example of the split (padding rows of the last batch left out), in the split's
order, to `FILE` (default `DIR/predictions_<split>.jsonl`; a name ending in `.csv` writes CSV, a
column per field, lists as JSON):

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


def predict_records(config: Any, workdir: str, step: Optional[int] = None,
                    split: Optional[str] = None, top_k: int = 5) -> List[Dict[str, Any]]:
  """The records of the checkpoint at `step` (the latest when None) on `split` (the last eval
  split when None)."""
  from mmjax import data   # the trainer and the datasets, imported when predicting
  from mmjax.train import loop
  if jax.process_count() > 1:
    raise ConfigError("mmjax predict runs in one process (it writes every record itself); run "
                      "it without --distributed, on one host's devices")
  split = split or evaluators.report_split(config.evals)
  splits = {loop.train_split(config), *(spec.split for spec in config.evals.values())}
  if split not in splits:
    raise ConfigError(f"--split {split!r} is not one of the run's splits {sorted(splits)}; add "
                      "an evaluator on it to config.evals")
  readers, tasks, driver, state = loop.restore_checkpoint(config, workdir, step)[:4]
  params = evaluation_params(state)

  @jax.jit
  def predict(params, batch):
    return task_predictions(state.apply_fn({"params": params}, batch, train=False), tasks)

  records, index = [], 0
  for batch in data.eval_batches(readers[split], config.eval_batch_size):
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
                       top_k: int = 5) -> str:
  """Writes the predictions file (module docstring); returns its path."""
  split = split or evaluators.report_split(config.evals)
  records = predict_records(config, workdir, step, split, top_k)
  return write_predictions(records, path or os.path.join(workdir, f"predictions_{split}.jsonl"))
