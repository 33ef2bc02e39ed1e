"""One fusion on one `interactions` config: `--config=experiments/configs/interactions.py:CONFIG,FUSION`.

CONFIG is redundancy, uniqueness, synergy or mixed; FUSION any registered fusion name, e.g.
    mmjax train --config=experiments/configs/interactions.py:synergy,low_rank --workdir=runs/lmf

Each modality is encoded by an MLP (by per-modality tokens for the sequence fusions mult and mbt),
and the head is linear, so what the model can represent across modalities is its fusion's doing.
"""
import ml_collections

from mmjax.data import interactions

SEQUENCE_FUSIONS = ("mult", "mbt")
FUSION_OPTIONS = {"late": {"output_dim": 16}, "film": {"conditioned": "b"},
                  "mbt": {"num_layers": 2, "fusion_layer": 1}}


def get_config(arg: str = "synergy,concat") -> ml_collections.ConfigDict:
  data_config, fusion = arg.split(",")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = f"interactions/{data_config}"
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.train_split = "train"
  config.dataset.cache_in_memory = True
  config.eval_splits = ("validation", "test")

  if fusion in SEQUENCE_FUSIONS:
    encoder = dict(name="feature_tokens", num_tokens=4, model_dim=16)
  else:
    encoder = dict(name="mlp", hidden_dims=(32,), output_dim=16)
  config.model = ml_collections.ConfigDict()
  config.model.encoders = ml_collections.ConfigDict({"a": dict(encoder), "b": dict(encoder)})
  config.model.fusion = dict(name=fusion, **FUSION_OPTIONS.get(fusion, {}))
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.label = dict(name="linear",
                                  num_classes=interactions.NUM_CLASSES[data_config])
  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = dict(loss="softmax_cross_entropy", weight=1.0)

  config.batch_size = 128
  config.eval_batch_size = 1000
  config.total_steps = 1500
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 50
  config.optimizer.final_lr_fraction = 0.05
  config.optimizer.grad_clip_norm = 1.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0

  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep_best = 1
  config.checkpoint.best_metric = "label/accuracy"
  config.checkpoint.best_mode = "max"
  return config
