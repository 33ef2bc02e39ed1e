"""orbax checkpoints: async saves, the best k by a validation metric plus the latest, resume.

A save is written into a temporary folder that orbax renames to `<step>/` only once every file
is complete, so a process killed during a save leaves the previous checkpoints as they were and
`latest_step` never sees the partial one (tested with a real SIGKILL)."""
import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax.errors import WorkdirError
from mmjax.tasks.objective import parameter_path
from mmjax.train.state import TrainState

Policies = ocp.checkpoint_managers


def checkpoint_manager(workdir: str, keep_best: int, best_metric: str, best_mode: str,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` that keeps the latest checkpoint and the `keep_best`
  best ones by `metrics[best_metric]` (`best_mode` 'max' or 'min'); saves are asynchronous."""
  if best_mode not in ("max", "min"):
    raise ValueError(f"checkpoint best_mode is {best_mode!r}; use 'max' or 'min'")
  preservation = Policies.AnyPreservationPolicy([
      Policies.LatestN(n=1),
      Policies.BestN(get_metric_fn=lambda metrics: metrics[best_metric],
                     reverse=best_mode == "min", n=keep_best,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=preservation,
                                         enable_async_checkpointing=True, read_only=read_only)
  # The handler is named so that a fresh manager can read a checkpoint's metadata.
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options, item_handlers=ocp.StandardCheckpointHandler())


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a complete checkpoint (a finished save's `<step>/` folder)."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def save(manager: ocp.CheckpointManager, state: TrainState, metrics: Optional[dict] = None) -> None:
  """Starts an asynchronous save of `state` at its step (with validation metrics, if any)."""
  manager.save(int(state.step), args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, state: TrainState,
            step: Optional[int] = None) -> Optional[TrainState]:
  """`state` with the saved values at `step` (the latest when None); None if there is none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if step not in manager.all_steps():
    raise WorkdirError(f"no checkpoint at step {step} in {manager.directory}; saved steps are "
                       f"{sorted(manager.all_steps())}")
  difference = structure_mismatch(manager, step, state)
  if difference:
    raise WorkdirError(f"{manager.directory} holds a checkpoint (step {step}) of another model: "
                       f"{difference}; use a new --workdir, or the config that wrote it")
  return manager.restore(step, args=ocp.args.StandardRestore(state))


def _shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
  """`{path: shape}` of every leaf of a state, or of a checkpoint's metadata tree."""
  return {parameter_path(path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def structure_mismatch(manager: ocp.CheckpointManager, step: int, state: TrainState
                       ) -> Optional[str]:
  """The first difference between the arrays saved at `step` and those of `state` (parameters
  first), naming the array and both shapes; None when every path and shape agree."""
  saved, wanted = _shapes(manager.item_metadata(step).tree), _shapes(state)
  order = lambda path: (not path.startswith("params/"), path)
  for path in sorted(set(saved) | set(wanted), key=order):
    if path not in saved:
      return f"{path} (shape {wanted[path]}) is in this config's state but not in the checkpoint"
    if path not in wanted:
      return f"the checkpoint has {path} (shape {saved[path]}), which this config's state lacks"
    if saved[path] != wanted[path]:
      return (f"{path} has shape {saved[path]} in the checkpoint and {wanted[path]} in this "
              "config")
  return None


def restore_raw(manager: ocp.CheckpointManager) -> Optional[dict]:
  """The latest checkpoint's saved tree as host arrays, whatever model wrote it; None if none."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.StandardRestore())
