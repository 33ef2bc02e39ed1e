"""orbax checkpoints: async saves, the best k by a validation metric plus the latest, resume."""
import os
from typing import Optional

import orbax.checkpoint as ocp

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
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


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
    raise ValueError(f"no checkpoint at step {step}; saved steps are {sorted(manager.all_steps())}")
  return manager.restore(step, args=ocp.args.StandardRestore(state))



def restore_raw(manager: ocp.CheckpointManager) -> Optional[dict]:
  """The latest checkpoint's saved tree as host arrays, whatever model wrote it; None if none."""
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.StandardRestore())
