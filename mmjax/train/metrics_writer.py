"""Metrics to `workdir/metrics.jsonl` (one JSON object per line) and TensorBoard event files.

TensorBoard events are written by tensorboardX, which needs only protobuf, not TensorFlow.
"""
import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricsWriter:
  """`write(step, split, metrics)` appends `{"step", "split", **metrics}` and logs `split/name`.

  A run resumed from the checkpoint at `start_step` first drops what the interrupted run logged
  after that step (it will be logged again): `metrics.jsonl` keeps only its lines up to
  `start_step`, and TensorBoard is told to purge the later events."""

  def __init__(self, workdir: str, start_step: int = 0):
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as file:
        kept = [line for line in file if line.strip() and json.loads(line)["step"] <= start_step]
      with open(path + ".tmp", "w") as file:
        file.writelines(kept)
      os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a")
    self._tensorboard = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"),
                                      purge_step=start_step + 1 if start_step else None)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      if value is not None:   # e.g. MFU where the device's peak is unknown
        self._tensorboard.add_scalar(f"{split}/{name}", value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
