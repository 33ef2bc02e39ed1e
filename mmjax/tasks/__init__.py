"""Task heads, losses and the multi-task objective."""
from mmjax.tasks.heads import HEADS, LinearHead, MLPHead
from mmjax.tasks.losses import LOSSES, softmax_cross_entropy
from mmjax.tasks.objective import Task, multitask_objective, tasks_from_config

__all__ = ["HEADS", "LOSSES", "LinearHead", "MLPHead", "Task", "multitask_objective",
           "softmax_cross_entropy", "tasks_from_config"]
