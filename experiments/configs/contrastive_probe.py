"""Contrastive pre-training, then a linear probe, on `interactions/redundancy`, whose two
modalities share one bit r (and carry three independent distractor bits each; the label is r,
flipped to a random class 10% of the time, Bayes accuracy 0.95).

    mmjax train --config experiments/configs/contrastive_probe.py:pretrain,infonce --workdir runs/pre
    mmjax train --config experiments/configs/contrastive_probe.py:probe --workdir runs/probe \
        --config.init_from=runs/pre

`pretrain,LOSS` (LOSS = infonce or siglip) trains the two MLP encoders, with no label, to map
paired examples close together and unpaired ones apart: what the modalities share is all that
can align them, so the encoders learn r. `probe` copies those encoders (`init_from`), freezes them
(`optimizer.frozen`) and trains only a linear classifier of the label on their concatenated
features: its accuracy measures how linearly available r is in the pre-trained features.
`probe` without `init_from` is the same probe on frozen random encoders, the baseline.
`pretrain` ends with the `retrieval` evaluator over the whole test split.

(`mm_shapes` is no use here: its modalities are independent by construction, so there is nothing
for a contrastive loss to align.)
"""
import ml_collections

from mmjax.data import interactions
from mmjax.evaluators import evaluator_config
from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config

def get_config(arg: str = "pretrain,infonce") -> ml_collections.ConfigDict:
  stage, _, loss = arg.partition(",")
  config = trainer_config("interactions/redundancy")
  encoder = lambda: encoder_config("mlp", hidden_dims=(64,), dim=16)
  config.model.encoders = ml_collections.ConfigDict({"a": encoder(), "b": encoder()})
  config.model.fusion = fusion_config("concat")
  config.model.heads = ml_collections.ConfigDict()
  config.tasks = ml_collections.ConfigDict()
  if stage == "pretrain":
    # Its initial scale and bias are the loss's (CLIP's or SigLIP's), from the task.
    config.model.heads.contrastive = head_config("contrastive", modalities=("a", "b"),
                                                 embed_dim=16)
    config.tasks.contrastive = task_config("contrastive", loss=loss)
    config.checkpoint.best_metric = "validation/contrastive/loss"
    config.checkpoint.best_mode = "min"
    # Whole-split retrieval at the end (the task's own R@k ranks among each eval batch only).
    config.evals.retrieval = evaluator_config("retrieval", split="test")
  elif stage == "probe":
    config.model.heads.label = head_config(
        "linear", num_classes=interactions.STRUCTURES["redundancy"].num_classes)
    config.tasks.label = task_config("classification")
    config.optimizer.frozen = "^encoders_"
  else:
    raise ValueError(f"unknown stage {stage!r}; use pretrain,infonce / pretrain,siglip / probe")

  config.batch_size = 256
  config.eval_batch_size = 1000
  config.total_steps = 1000
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 50
  config.log_every_steps = 100
  config.evals.validation.every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint.keep_best = 1
  return config
