"""CMU-MOSI (or MOSEI) sentiment regression in [−3, 3] from the MulT release's aligned features:
`--config=experiments/configs/mosi.py:VARIANT[,mosei]`, VARIANT one of `text`, `audio`, `vision`
(one modality), `concat` (early fusion), `late`, `tensor` (TFN), `low_rank` (LMF) or `mult`
(MulT).

    mmjax train --config experiments/configs/mosi.py:low_rank --workdir runs/mosi_lmf \
        --config.dataset.manual_dir=DIR   # holding mosi_data.pkl

Each modality's sequence goes through an LSTM to its state after the last real step, at the LMF
paper's MOSI sizes (text 128, audio 4, vision 16 units; LMF rank 4); the head regresses the score
(L1 loss, as MulT). `mult` is MulT as its reference code runs MOSI: the feature sequences go
unencoded into the fusion (which projects them), its defaults (d = 30, 5 heads, 5 layers), a linear
output layer, batch 24, Adam at 1e-3 with gradient clipping at 1.0, 40 epochs (2,160 steps); our
cosine schedule replaces its reduce-on-plateau decay. Metrics: MAE, Pearson's r, Acc-2 in both
conventions with their F1, and Acc-7 (`sentiment_metrics`, `mmjax/tasks/kinds.py`); the best
checkpoint has the lowest validation MAE.
"""
import ml_collections

from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config

HIDDEN = {"text": 128, "audio": 4, "vision": 16}
FUSIONS = {"concat": {}, "late": {"dim": 64}, "tensor": {}, "low_rank": {"dim": 64, "rank": 4},
           "mult": {}}


def get_config(arg: str = "low_rank") -> ml_collections.ConfigDict:
  variant, _, dataset = arg.partition(",")
  if variant not in (*HIDDEN, *FUSIONS):
    raise ValueError(f"unknown MOSI variant {variant!r}; use one of "
                     f"{', '.join((*HIDDEN, *FUSIONS))}")
  config = trainer_config("cmu_mosei" if dataset == "mosei" else "cmu_mosi")
  modalities = [variant] if variant in HIDDEN else list(HIDDEN)
  encoder = (lambda m: encoder_config("sequence_features")) if variant == "mult" else (
      lambda m: encoder_config("sequence_lstm", hidden_dim=HIDDEN[m]))
  config.model.encoders = ml_collections.ConfigDict({m: encoder(m) for m in modalities})
  config.model.fusion = fusion_config("concat" if variant in HIDDEN else variant,
                                      **FUSIONS.get(variant, {}))
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.label = head_config("mlp", num_classes=1, hidden_dims=(64,),
                                         dropout_rate=0.15)
  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = task_config("regression", loss="l1", sentiment_metrics=True)

  config.batch_size = 32
  config.eval_batch_size = 256
  config.total_steps = 4000
  config.optimizer.learning_rate = 1e-3
  config.log_every_steps = 100
  config.evals.validation.every_steps = 400
  config.checkpoint_every_steps = 400
  config.checkpoint.best_metric = "validation/label/mae"
  config.checkpoint.best_mode = "min"
  config.checkpoint.keep_best = 1
  if variant == "mult":
    config.model.heads.label = head_config("linear", num_classes=1)
    config.batch_size = 24
    config.total_steps = 2160
    config.evals.validation.every_steps = config.checkpoint_every_steps = 270
  return config
