"""The seed document's text+image classifier on the built-in `mm_shapes` dataset.

text: embedding (25,000 x 100) -> 2-layer LSTM (256) -> hidden state at the last real token
image: 3x3 conv (C channels) -> ReLU -> global average pool
fusion: concatenate -> Dense to the classes; softmax cross-entropy; Adam.

Switch encoders by config, e.g. `--config.model.encoders.text.name=transformer` (then drop the
LSTM-only fields, or use `experiments/configs/transformer_resnet.py`).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "mm_shapes"
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.train_split = "train"
  config.dataset.cache_in_memory = True
  config.eval_splits = ("validation", "test")

  config.model = ml_collections.ConfigDict()
  config.model.encoders = ml_collections.ConfigDict()
  config.model.encoders.text = dict(name="lstm", vocab_size=25_000, embed_dim=100, hidden_dim=256,
                                    num_layers=2)
  config.model.encoders.image = dict(name="conv_pool", channels=64)
  config.model.fusion = dict(name="concat")
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.label = dict(name="linear", num_classes=9)
  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = dict(loss="softmax_cross_entropy", weight=1.0)

  config.batch_size = 64
  config.eval_batch_size = 500
  config.total_steps = 1000
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.final_lr_fraction = 0.05
  config.optimizer.grad_clip_norm = 1.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0

  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep_best = 2
  config.checkpoint.best_metric = "label/accuracy"
  config.checkpoint.best_mode = "max"
  return config
