"""One fusion on one `interactions` config: `--config=experiments/configs/interactions.py:CONFIG,FUSION`.

CONFIG is redundancy, uniqueness, synergy, mixed, synergy3 (three modalities) or rank6 (a
regression target of bilinear rank 6); FUSION any registered fusion name, e.g.
    mmjax train --config=experiments/configs/interactions.py:synergy,low_rank --workdir=runs/lmf

Each modality is encoded by an MLP (by per-modality tokens for the sequence fusions mult and mbt),
and the head is linear, so what the model can represent across modalities is its fusion's doing.
On rank6, LMF outputs one coordinate, so that its rank is the rank of the prediction (see
`mmjax/data/interactions.py`). A third part `dropout` (`synergy,tensor,dropout`) trains with
modality dropout, every modality dropped with probability 0.3 (`mmjax/modalities.py`).
"""
import ml_collections

from mmjax.data import interactions
from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config

SEQUENCE_FUSIONS = ("mult", "mbt")
# MBT passes nothing across modalities unless at least 2 layers fuse (see mmjax/fusion/mbt.py).
FUSION_OPTIONS = {"late": {"dim": 16}, "film": {"conditioned": "b"},
                  "mbt": {"num_layers": 2, "fusion_layer": 0}}


def get_config(arg: str = "synergy,concat") -> ml_collections.ConfigDict:
  parts = arg.split(",")
  if len(parts) not in (2, 3) or parts[2:] not in ([], ["dropout"]):
    raise ValueError(f"{arg!r} is not CONFIG,FUSION or CONFIG,FUSION,dropout")
  data_config, fusion, *training = parts
  structure = interactions.STRUCTURES[data_config]
  config = trainer_config(f"interactions/{data_config}")
  if fusion in SEQUENCE_FUSIONS:
    encoder = lambda: encoder_config("feature_tokens", num_tokens=4, model_dim=16)
  else:
    encoder = lambda: encoder_config("mlp", hidden_dims=(32,), dim=16)
  config.model.encoders = ml_collections.ConfigDict({m: encoder() for m in structure.modalities})
  options = dict(FUSION_OPTIONS.get(fusion, {}))
  if structure.num_classes == 0 and fusion == "low_rank":
    options["dim"] = 1
  config.model.fusion = fusion_config(fusion, **options)
  config.model.heads = ml_collections.ConfigDict()
  config.tasks = ml_collections.ConfigDict()
  if structure.num_classes:
    config.model.heads.label = head_config("linear", num_classes=structure.num_classes)
    config.tasks.label = task_config("classification")
  else:
    config.model.heads.label = head_config("linear", num_classes=1)
    config.tasks.label = task_config("regression", loss="mse")
    config.checkpoint.best_metric = "validation/label/mse"
    config.checkpoint.best_mode = "min"

  config.batch_size = 128
  config.eval_batch_size = 1000
  config.total_steps = 1500
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 50
  config.log_every_steps = 100
  config.evals.validation.every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint.keep_best = 1
  if training:
    config.modality_dropout.rate = 0.3
  return config
