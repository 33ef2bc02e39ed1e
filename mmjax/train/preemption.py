"""Preemption: SIGTERM (what cluster schedulers send before they evict a job) or SIGINT (Ctrl-C)
asks the trainer to finish its current step, save a checkpoint, wait for it and exit cleanly."""
import signal
import sys
import threading
from typing import Optional

import jax

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """A context manager under which SIGTERM and SIGINT set `received` (the signal's name) instead
  of killing the process; a second signal while the checkpoint is saved is reported and ignored,
  so it cannot cut the save short. The previous handlers are restored on exit.

  With several processes nothing is installed: every process must stop at the same step (the
  save is collective), which a signal reaching one process cannot arrange. SIGTERM is then left to
  JAX's preemption service, which `CheckpointManager.reached_preemption` turns into a step that
  all processes agree on. Handlers can only be installed from the main thread; elsewhere this
  does nothing either."""

  def __init__(self):
    self.received: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
    return self

  def _handle(self, number: int, _frame) -> None:
    name = signal.Signals(number).name
    if self.received is None:
      self.received = name
      print(f"mmjax: {name} received: finishing this step and saving a checkpoint",
            file=sys.stderr, flush=True)
    else:
      print(f"mmjax: {name} received again: still saving the checkpoint; the run exits when it "
            "is complete", file=sys.stderr, flush=True)

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
