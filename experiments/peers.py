"""What the speed-peer benchmarks share (`bench_seed.py`, `bench_multibench.py`): checking the
peer's interpreter, running a peer script for its last JSON line, and alternating mmjax's timing
with the peer's so that a change in machine load hits both, with the medians."""
import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Dict, Sequence, Tuple


def check_peer(python: str, paths: Sequence[Tuple[str, str]]) -> None:
  """Exits with one line when a (flag, path) does not exist or `python` cannot import torch."""
  for flag, path in paths:
    if not os.path.exists(path):
      sys.exit(f"--compare-torch: no {path}; pass {flag}")
  probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
  if probe.returncode:
    sys.exit(f"--compare-torch: {python} cannot import torch; install it there "
             "(pip install torch==2.13.0) or pass --torch-python")


def run_peer(command: Sequence[str]) -> dict:
  """The last line of `command`'s output, as JSON."""
  output = subprocess.run(list(command), check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def alternate(repeats: int, ours: Callable[[], dict], peer: Callable[[], dict], name: str
              ) -> Dict[str, object]:
  """`ours()` and `peer()` alternated `repeats` times: `{"runs": {"mmjax": [...], name: [...]}
  (each run's samples/s), "medians": {...}, "ratio": mmjax / peer, "first_peer": its first
  report}`."""
  runs = {"mmjax": [], name: []}
  first = None
  for _ in range(repeats):
    runs["mmjax"].append(ours()["samples_per_s"])
    found = peer()
    first = first or found
    runs[name].append(found["samples_per_s"])
  medians = {impl: statistics.median(values) for impl, values in runs.items()}
  return {"runs": runs, "medians": medians, "ratio": medians["mmjax"] / medians[name],
          "first_peer": first}
