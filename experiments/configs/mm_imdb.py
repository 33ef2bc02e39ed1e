"""MM-IMDb genre classification (23 genres, multi-label) from the released features:
`--config=experiments/configs/mm_imdb.py:VARIANT`, VARIANT one of `text`, `image` (one modality),
`concat` (early fusion), `late`, `low_rank` (LRTF) or `gmu` (Arevalo et al.'s gated multimodal
unit, the dataset's paper).

    mmjax train --config experiments/configs/mm_imdb.py:gmu --workdir runs/imdb_gmu \
        --config.dataset.manual_dir=DIR   # holding multimodal_imdb.hdf5

Inputs are the file's 300-d word2vec text features and 4,096-d VGG image features; each goes
through an MLP encoder (512 units, as the GMU paper's hidden size), the fusion, and a linear head
on 23 sigmoid outputs. Metrics: micro and macro F1 at 0.5 and mean average precision; the best
checkpoint is chosen by validation micro F1. Paper numbers and their conventions belong to issue
11's reference results.
"""
import ml_collections

from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config

MODALITIES = ("text", "image")
FUSIONS = {"concat": {}, "late": {"dim": 512}, "low_rank": {"dim": 512, "rank": 16},
           "gmu": {"dim": 512}}


def get_config(arg: str = "gmu") -> ml_collections.ConfigDict:
  if arg not in (*MODALITIES, *FUSIONS):
    raise ValueError(f"unknown MM-IMDb variant {arg!r}; use one of "
                     f"{', '.join((*MODALITIES, *FUSIONS))}")
  config = trainer_config("mm_imdb")
  modalities = [arg] if arg in MODALITIES else list(MODALITIES)
  config.model.encoders = ml_collections.ConfigDict(
      {m: encoder_config("mlp", hidden_dims=(512,), dim=512) for m in modalities})
  config.model.fusion = fusion_config("concat" if arg in MODALITIES else arg,
                                      **FUSIONS.get(arg, {}))
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.genres = head_config("linear", num_classes=23)
  config.tasks = ml_collections.ConfigDict()
  config.tasks.genres = task_config("multilabel")

  config.batch_size = 128
  config.eval_batch_size = 1000
  config.total_steps = 5000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-2
  config.optimizer.weight_decay_mask = "all"   # MultiBench's torch AdamW decays every parameter
  config.log_every_steps = 100
  config.evals.validation.every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint.best_metric = "validation/genres/micro_f1"
  config.checkpoint.keep_best = 1
  return config
