"""Metrics to `workdir/metrics.jsonl` (one JSON object per line) and TensorBoard event files.

TensorBoard events are written by tensorboardX, which needs only protobuf, not TensorFlow.
"""
import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricsWriter:
  """`write(step, split, metrics)` appends `{"step", "split", **metrics}` and logs `split/name`."""

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tensorboard = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
