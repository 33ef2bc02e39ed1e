"""Task heads, task kinds, the multi-task objective and task weighting."""
from mmjax.tasks.heads import HEADS, ContrastiveHead, LinearHead, MLPHead
from mmjax.tasks.kinds import TASK_KINDS
from mmjax.tasks.objective import objective_sums, task_config, tasks_from_config
from mmjax.tasks.weighting import WEIGHTINGS, weighting_config

__all__ = ["HEADS", "TASK_KINDS", "WEIGHTINGS", "ContrastiveHead", "LinearHead", "MLPHead",
           "objective_sums", "task_config", "tasks_from_config", "weighting_config"]
