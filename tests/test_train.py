"""The trainer end to end: learning the built-in dataset, exact resume, checkpoint retention,
config errors before compilation, and the CLI."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmjax.data import mm_shapes
from mmjax.train import checkpoint, loop
from mmjax.train.defaults import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_CONFIG = os.path.join(REPO, "experiments", "configs", "seed_text_image.py")


def seed_config(data_dir):
  config = load_config(SEED_CONFIG)
  config.dataset.data_dir = data_dir
  return config


def tiny_config(data_dir, total_steps=8):
  """A small model with dropout everywhere, so exact resume also covers the per-step rng."""
  config = seed_config(data_dir)
  config.model.encoders.text = dict(name="transformer", vocab_size=64, max_length=12, model_dim=16,
                                    num_layers=1, num_heads=2, mlp_dim=16, dropout_rate=0.1)
  config.model.encoders.image = dict(name="conv_pool", channels=8)
  config.model.heads.label = dict(name="mlp", num_classes=9, hidden_dims=(16,), dropout_rate=0.2)
  config.batch_size = 16
  config.total_steps = total_steps
  config.optimizer.warmup_steps = 2
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.eval_batch_size = 1000
  return config


def test_seed_model_learns_within_5_points_of_bayes_accuracy(data_dir, tmp_path):
  config = seed_config(data_dir)
  config.total_steps = 400
  config.eval_every_steps = 400
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["test"]["accuracy"] >= mm_shapes.BAYES_ACCURACY - 0.05, results
  with open(tmp_path / "results.json") as file:
    written = json.load(file)
  assert written["test"]["accuracy"] == results["test"]["accuracy"]
  assert set(written) == {"step", "validation", "test"}
  assert os.listdir(tmp_path / "checkpoints")


def _final_params(workdir, config):
  readers, tasks, schedule, state, _ = loop._setup(config)
  manager = checkpoint.checkpoint_manager(workdir, 2, "label/accuracy", "max", read_only=True)
  return checkpoint.restore(manager, state)


def test_stop_and_resume_reproduces_the_uninterrupted_run_exactly(data_dir, tmp_path):
  config = tiny_config(data_dir)
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  loop.train_and_evaluate(config, straight)
  assert loop.train_and_evaluate(config, split, stop_after_step=5) == {}
  loop.train_and_evaluate(config, split)
  a, b = _final_params(straight, config), _final_params(split, config)
  assert int(a.step) == int(b.step) == 8
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path((a.params, a.opt_state)),
                          jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  with open(os.path.join(straight, "results.json")) as f, \
      open(os.path.join(split, "results.json")) as g:
    assert json.load(f) == json.load(g)


def test_checkpoints_kept_are_the_best_k_by_validation_accuracy_plus_the_latest(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=12)
  config.eval_every_steps = 2
  config.checkpoint.keep_best = 2
  loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as file:
    records = [json.loads(line) for line in file]
  accuracy = {r["step"]: r["label/accuracy"] for r in records if r["split"] == "validation"}
  assert sorted(accuracy) == [2, 4, 6, 8, 10, 12]
  best = sorted(accuracy, key=accuracy.get)[-2:]  # ties: the later step wins, as in orbax
  kept = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
  assert kept == sorted(set(best) | {12})


@pytest.mark.parametrize("override,message", [
    (("model.heads.label.num_classes", 10),
     "config.model.heads.label.num_classes=10 but 'label' has 9 classes; set it to 9"),
    (("model.encoders.text.vocab_size", 10),
     "config.model.encoders.text.vocab_size=10 is smaller than the dataset's vocabulary"),
    (("checkpoint.best_metric", "shape/accuracy"), "config.checkpoint.best_metric='shape/accuracy'"),
    (("batch_size", 0), "config.batch_size=0 must be positive"),
])
def test_bad_config_fails_in_one_line_before_compiling(data_dir, tmp_path, override, message):
  config = tiny_config(data_dir)
  field, value = override
  node = config
  for part in field.split(".")[:-1]:
    node = node[part]
  node[field.split(".")[-1]] = value
  with pytest.raises(loop.ConfigError, match=message.replace("(", r"\(")) as error:
    loop.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_an_encoder_for_a_modality_the_dataset_lacks_is_named(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.model.encoders.audio = dict(name="conv_pool", channels=4)
  with pytest.raises(loop.ConfigError, match="encoders has 'audio' but dataset 'mm_shapes'"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_cli_train_then_eval(data_dir, tmp_path):
  common = [f"--config={SEED_CONFIG}", f"--workdir={tmp_path}",
            f"--config.dataset.data_dir={data_dir}",
            "--config.model.encoders.text.hidden_dim=8", "--config.model.encoders.text.embed_dim=4",
            "--config.model.encoders.image.channels=4", "--config.total_steps=3",
            "--config.eval_every_steps=3", "--config.checkpoint_every_steps=3",
            "--config.batch_size=8"]
  env = {**os.environ, "TQDM_DISABLE": "1"}
  train = subprocess.run([sys.executable, "-m", "mmjax.cli", "train", *common], env=env,
                         capture_output=True, text=True)
  assert train.returncode == 0, train.stderr[-2000:]
  assert "mmjax: final validation" in train.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  evaluation = subprocess.run([sys.executable, "-m", "mmjax.cli", "eval", *common], env=env,
                              capture_output=True, text=True)
  assert evaluation.returncode == 0, evaluation.stderr[-2000:]
  evaluated = json.loads((tmp_path / "eval_results.json").read_text())
  assert evaluated == results
  usage = subprocess.run([sys.executable, "-m", "mmjax.cli", "fit", *common], env=env,
                         capture_output=True, text=True)
  assert usage.returncode != 0 and "usage: mmjax {train|eval}" in usage.stderr
