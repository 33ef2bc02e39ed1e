"""The trainer's config fields with their defaults (experiment configs start from these and set
the dataset, the model and the tasks), and loading a config file by path."""
import importlib.util
import os
from typing import Optional

import ml_collections

from mmjax import evaluators
from mmjax.balancing import balancing_config
from mmjax.tasks.weighting import weighting_config


def load_config(path: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` (or `get_config()`) of the config file at `path`, as `--config=path:arg`
  would load it."""
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def trainer_config(dataset_name: str) -> ml_collections.ConfigDict:
  """Every field `mmjax.train.loop` reads, except the model's modules and `config.tasks`
  (`{name: task_config(kind, ...)}`, one per head)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = ml_collections.ConfigDict()
  config.model.dtype = "float32"        # compute dtype of every module: bfloat16 = mixed precision
  config.model.absent_embedding = False  # a learned vector for an absent modality's features
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = dataset_name
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)  # original files
  config.dataset.options = ml_collections.ConfigDict()  # multimodal_folder: image_size, ...
  config.dataset.train_split = "train"  # a split, or a tfds slice of one: 'train[:10%]'
  config.dataset.train_examples = 0     # > 0: train on the split's first N examples only
  config.dataset.cache = "memory"       # or "columns" (memory-mapped, larger than RAM), "none"

  config.batch_size = 64                 # the global batch, over every device and process
  config.eval_batch_size = 512
  config.total_steps = 1000
  config.grad_accum_steps = 1            # micro-batches per step: the update of one k× batch
  config.ema_decay = 0.0                 # > 0: evaluate and checkpoint an EMA of the parameters
                                         #   (decay warmed up as min(d, (1 + t) / (10 + t)))

  # Modality dropout (mmjax/modalities.py): each modality absent from an example with probability
  # rates[m] (or rate), never every modality; or `subsets`: {'audio+image': q, 'image': q, ...}.
  config.modality_dropout = ml_collections.ConfigDict()
  config.modality_dropout.rate = 0.0
  config.modality_dropout.rates = ml_collections.ConfigDict()
  config.modality_dropout.subsets = ml_collections.ConfigDict()

  config.balancing = balancing_config("none")   # or ogm_ge (mmjax/balancing/)
  config.task_weighting = weighting_config("fixed")   # or uncertainty, gradnorm, pcgrad, dwa,
                                                      #   gradient_blend
  config.shared_weight_decay = 0.0       # reg/shared: ½λ‖θ‖² on the encoders and the fusion
  config.init_from = ml_collections.config_dict.placeholder(str)  # a workdir: copy its params

  config.parallel = ml_collections.ConfigDict()
  config.parallel.driver = "jit"         # 'jit' (named shardings) or 'pmap' (shard_map per device)
  config.parallel.num_devices = 0        # 0: every device of every process
  config.parallel.fsdp = 1               # jit: size of the mesh axis that splits parameters
  config.parallel.fsdp_rules = (".*",)   # jit: regexes of the state paths split along 'fsdp'
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.final_lr_fraction = 0.05
  config.optimizer.grad_clip_norm = 1.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0     # AdamW's decoupled decay (not a term of the loss)
  config.optimizer.weight_decay_mask = "matrices"  # open_clip's: no biases, norms, scalars; "all"
  config.optimizer.frozen = ""           # regex of parameter paths never updated, e.g. "encoders_"
  # Pretrained towers: {modality: finetune_config(lock, unlock_last_blocks, layer_decay)}
  # (mmjax/train/finetune.py).
  config.finetune = ml_collections.ConfigDict()

  config.on_nonfinite = "stop"           # a NaN/Inf loss or gradient: "stop" with an error naming
                                         #   the task or parameter group, or "skip" the update
  config.max_skipped_steps = 100         # "skip": stop once more steps than this were skipped

  config.log_every_steps = 50
  config.profile_steps = (0, 0)          # (start, stop) > 0: a jax.profiler trace of those steps
                                         #   in DIR/profile (TensorBoard's profile plugin)
  # Evaluators (mmjax/evaluators/): {key: evaluator_config(name, split=..., every_steps=...)},
  # each logged as <key>/<metric>; every one also runs at the end of training.
  config.evals = evaluators.metrics_evals(("validation", "test"), every_steps=250)
  config.checkpoint_every_steps = 250
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep_best = 2
  config.checkpoint.best_metric = "validation/label/accuracy"   # '<evaluator key>/<metric>'
  config.checkpoint.best_mode = "max"
  return config
