"""Small seed-model configs: in memory, or written as a file so that a CLI subprocess and the test
load the same config."""
import os

import ml_collections

from mmjax import evaluators
from mmjax.data import mm_shapes
from mmjax.model import encoder_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CONFIG = os.path.join(REPO, "experiments", "configs", "seed_text_image.py")


def write_config(path, data_dir, vocab_size=64, embed_dim=4, **fields):
  """A config file: the seed model, small, at a constant learning rate (so a run's steps do not
  depend on total_steps), with `fields` set; the CLI and the test load the same file."""
  lines = ["from mmjax.train.defaults import load_config",
           "def get_config():",
           f"  config = load_config({SEED_CONFIG!r})",
           f"  config.dataset.data_dir = {data_dir!r}",
           f"  config.model.encoders.text.vocab_size = {vocab_size}",
           f"  config.model.encoders.text.embed_dim = {embed_dim}",
           "  config.model.encoders.text.hidden_dim = 8",
           "  config.model.encoders.image.channels = 4",
           "  config.batch_size = 8",
           "  config.optimizer.warmup_steps = 0",
           "  config.optimizer.final_lr_fraction = 1.0",
           "  config.eval_batch_size = 1000"]
  lines += [f"  config.{key.replace('__', '.')} = {value!r}" for key, value in fields.items()]
  lines.append("  return config")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def seed_config(data_dir):
  config = load_config(SEED_CONFIG)
  config.dataset.data_dir = data_dir
  return config


def tiny_config(data_dir, total_steps=8):
  """A small model with dropout everywhere, so exact resume also covers the per-step rng."""
  config = seed_config(data_dir)
  config.model.encoders.text = encoder_config("transformer", vocab_size=64, max_length=12,
                                              model_dim=16, num_layers=1, num_heads=2, mlp_dim=16,
                                              dropout_rate=0.1)
  config.model.encoders.image = encoder_config("conv_pool", channels=8)
  config.model.heads.label = head_config("mlp", num_classes=9, hidden_dims=(16,),
                                         dropout_rate=0.2)
  config.batch_size = 16
  config.total_steps = total_steps
  config.optimizer.warmup_steps = 2
  config.log_every_steps = 2
  config.evals.validation.every_steps = 4
  config.checkpoint_every_steps = 4
  config.eval_batch_size = 1000
  return config


def tiny_multitask_config(data_dir, total_steps=4):
  """`tiny_config` with an EMA and three task kinds: the label (classification), the size
  (regression, a quarter of its labels missing) and the shapes present (multi-label); eval
  batches of 600, so the last batch of a 2,000-example split is padded."""
  config = tiny_config(data_dir, total_steps)
  config.eval_batch_size = 600
  config.ema_decay = 0.9
  config.model.heads.size = head_config("linear", num_classes=1)
  config.model.heads.shapes_present = head_config("linear", num_classes=len(mm_shapes.SHAPES))
  config.tasks.size = task_config("regression", output_offset=7.75, output_scale=1.3)
  config.tasks.shapes_present = task_config("multilabel")
  return config


def shapes_tokenizer(directory):
  """A tokenizer.json folder of mm_shapes' own vocabulary (word level, lower-cased, padded to the
  tiny text encoder's 12 tokens), so that a zero-shot evaluator can prompt the tiny models."""
  import json
  import tokenizers
  os.makedirs(directory, exist_ok=True)
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(mm_shapes.WORD_IDS,
                                                               unk_token="<unk>"))
  tokenizer.normalizer = tokenizers.normalizers.Lowercase()
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tokenizer.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as file:
    json.dump({"pad_token": "<pad>", "model_max_length": 12}, file)
  return directory


def every_evaluator_config(data_dir, total_steps=4, every_steps=2):
  """`tiny_config` with a contrastive head on (text, image) beside the label's, and one evaluator
  of every registered kind (`evaluators.EVALUATORS`), each on 'validation' every `every_steps`
  steps; eval batches of 600 so that the last batch of the 1,000 validation examples is padded."""
  config = tiny_config(data_dir, total_steps)
  config.eval_batch_size = 600
  config.model.heads.pair = head_config("contrastive", modalities=("text", "image"),
                                        embed_dim=8)
  config.tasks.pair = task_config("contrastive")
  fields = {"interactions": dict(examples=200),
            "linear_probe": dict(task="label", train_examples=700),
            "zero_shot": dict(label="shape", templates=("a {}", "{} drawn"),
                              tokenizer=shapes_tokenizer(os.path.join(data_dir, "shapes_words")))}
  config.evals = ml_collections.ConfigDict({
      name: evaluators.evaluator_config(name, split="validation", every_steps=every_steps,
                                        **fields.get(name, {}))
      for name in evaluators.EVALUATORS})
  config.checkpoint.best_metric = "retrieval/a_to_b/R@5"
  config.checkpoint_every_steps = every_steps
  return config
