"""`metrics`: every task's metrics and the objective's terms over a whole split, from exact sums
over its real examples (padding rows, and examples without a task's label, count nowhere for
that task), and their number as `examples`. With one classification task its accuracy is also
`accuracy`."""
import dataclasses
from typing import Any, Dict, Optional

from mmjax.evaluators.context import Context, local_batches, score


@dataclasses.dataclass(frozen=True)
class Metrics:
  split: str = "validation"
  every_steps: int = 0   # 0: only at the end of training

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del config, tasks

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    """Why `metric` cannot select checkpoints (it names no task), or None."""
    if metric in ("loss", "examples", "accuracy") or metric.split("/")[0] in tasks:
      return None
    return (f"it names no task; use 'loss' or '<task>/<metric>' (e.g. '<task>/accuracy' or "
            f"'<task>/loss') with a task from {sorted(tasks)}")

  def run(self, context: Context, state: Any) -> Dict[str, float]:
    metrics = score(context, state, local_batches(context, self.split))
    tasks = context.tasks
    if len(tasks) == 1 and f"{next(iter(tasks))}/accuracy" in metrics:
      metrics["accuracy"] = metrics[f"{next(iter(tasks))}/accuracy"]
    return metrics

