"""The trainer end to end: learning the built-in dataset, exact resume, checkpoint retention,
config errors before compilation, and the CLI."""
import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import data
from mmjax.balancing import balancing_config
from mmjax.data import mm_shapes
from mmjax.data.pipeline import train_batch_indices
from mmjax.errors import NonFiniteError
from mmjax.model import encoder_config, head_config
from mmjax.tasks import task_config, weighting_config
from mmjax.train import checkpoint, loop
from mmjax.train.state import make_optimizer
from mmjax.train.step import eval_step, evaluate, train_step

from config_helpers import SEED_CONFIG, seed_config, tiny_config

def test_seed_model_learns_within_5_points_of_bayes_accuracy(data_dir, tmp_path):
  config = seed_config(data_dir)
  config.total_steps = 400
  config.evals.validation.every_steps = 400
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["test"]["accuracy"] >= mm_shapes.BAYES_ACCURACY - 0.05, results
  with open(tmp_path / "results.json") as file:
    written = json.load(file)
  assert written["test"]["accuracy"] == results["test"]["accuracy"]
  assert set(written) == {"step", "validation", "test", "complexity"}
  assert written["test"]["examples"] == 2000 and written["validation"]["examples"] == 1000
  assert os.listdir(tmp_path / "checkpoints")


def test_stop_and_resume_reproduces_the_uninterrupted_run_exactly(data_dir, tmp_path):
  """With every random part of a step (dropout, modality dropout, OGM-GE's noise), an EMA of the
  parameters and Gradient-Blending's estimates (at steps 0, 4 and 8: the split run stops after
  the one of step 4, saved with it), all in the checkpoints."""
  config = tiny_config(data_dir)
  config.modality_dropout.rate = 0.3
  config.balancing = balancing_config("ogm_ge", end_step=8, task="label")
  config.ema_decay = 0.5
  for m in ("image", "text"):
    config.model.heads[f"label_{m}"] = head_config("unimodal", modality=m, num_classes=9)
    config.tasks[f"label_{m}"] = task_config("classification", label_key="label", modality=m)
  config.task_weighting = weighting_config("gradient_blend", period_steps=4,
                                           heldout_split="train[:5%]")
  config.dataset.train_split = "train[5%:20%]"
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  loop.train_and_evaluate(config, straight)
  assert loop.train_and_evaluate(config, split, stop_after_step=5) == {}
  loop.train_and_evaluate(config, split)
  a, b = (loop.restore_checkpoint(config, workdir).state for workdir in (straight, split))
  assert int(a.step) == int(b.step) == 8 and a.ema_params is not None
  assert int(b.weighting_state["estimates"]) == 3
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path((a.params, a.opt_state,
                                                               a.ema_params, a.weighting_state)),
                          jax.tree.leaves((b.params, b.opt_state, b.ema_params,
                                           b.weighting_state))):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  with open(os.path.join(straight, "results.json")) as f, \
      open(os.path.join(split, "results.json")) as g:
    timings = ("complexity",)   # the two runs' speeds differ; their metrics must not
    assert ({k: v for k, v in json.load(f).items() if k not in timings}
            == {k: v for k, v in json.load(g).items() if k not in timings})


def test_checkpoints_kept_are_the_best_k_by_validation_accuracy_plus_the_latest(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=12)
  config.evals.validation.every_steps = 2
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
    (("checkpoint.best_metric", "validation/shape/accuracy"),
     "config.checkpoint.best_metric='validation/shape/accuracy': config.evals.validation cannot "
     "select checkpoints by 'shape/accuracy': it names no task"),
    (("checkpoint.best_metric", "label/accuracy"),
     "config.checkpoint.best_metric='label/accuracy': use '<evaluator>/<metric>'"),
    (("batch_size", 0), "config.batch_size=0 must be positive"),
    (("dataset.train_examples", -1), "config.dataset.train_examples=-1 must be positive"),
    (("dataset.train_split", "trian"), "split 'trian' of dataset 'mm_shapes': Unknown split"),
    (("dataset.train_examples", 10 ** 6), "split 'train[:1000000]' of dataset 'mm_shapes': "
                                          "Requested slice [:1000000] incompatible"),
    (("optimizer.learning_rate", -1.0), "config.optimizer.learning_rate=-1.0 must be > 0"),
    (("optimizer.learning_rate", 0.0), "config.optimizer.learning_rate=0.0 must be > 0"),
    (("optimizer.b2", 1.0), "config.optimizer.b2=1.0 must be in [0, 1)"),
    (("optimizer.final_lr_fraction", 1.5), "config.optimizer.final_lr_fraction=1.5 must be in "
                                           "[0, 1]"),
    (("optimizer.warmup_steps", -5), "config.optimizer.warmup_steps=-5 must be >= 0"),
    (("optimizer.weight_decay", -0.1), "config.optimizer.weight_decay=-0.1 must be >= 0"),
    (("max_skipped_steps", -1), "config.max_skipped_steps=-1 must be >= 0"),
    (("tasks.label.weight", -1.0), "config.tasks.label.weight=-1.0 must be >= 0"),
    (("optimizer.weight_decay_mask", "most"), "config.optimizer.weight_decay_mask='most'; use "
                                              "one of matrices, all"),
])
def test_bad_config_fails_in_one_line_before_compiling(data_dir, tmp_path, override, message):
  config = tiny_config(data_dir)
  field, value = override
  node = config
  for part in field.split(".")[:-1]:
    node = node[part]
  node[field.split(".")[-1]] = value
  with pytest.raises(loop.ConfigError, match=re.escape(message)) as error:
    loop.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_dropout_rate_outside_0_1_is_one_line_before_compiling(data_dir, tmp_path, rate):
  config = tiny_config(data_dir)
  config.model.heads.label = head_config("mlp", num_classes=9, hidden_dims=(8,),
                                         dropout_rate=rate)
  with pytest.raises(loop.ConfigError, match=re.escape(
      f"config.model.heads.label.dropout_rate={rate} must be in [0, 1)")):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_an_encoder_for_a_modality_the_dataset_lacks_is_named(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.model.encoders.audio = encoder_config("conv_pool", channels=4)
  with pytest.raises(loop.ConfigError, match="encoders has 'audio' but dataset 'mm_shapes'"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_cli_train_then_eval(data_dir, tmp_path):
  common = [f"--config={SEED_CONFIG}", f"--workdir={tmp_path}",
            f"--config.dataset.data_dir={data_dir}",
            "--config.model.encoders.text.hidden_dim=8", "--config.model.encoders.text.embed_dim=4",
            "--config.model.encoders.image.channels=4", "--config.total_steps=3",
            "--config.evals.validation.every_steps=3", "--config.checkpoint_every_steps=3",
            "--config.batch_size=8"]
  env = {**os.environ, "TQDM_DISABLE": "1"}
  train = subprocess.run([sys.executable, "-m", "mmjax.cli", "train", *common], env=env,
                         capture_output=True, text=True)
  assert train.returncode == 0, train.stderr[-2000:]
  # Evaluation lines show evaluation metrics, not training terms (bug caught: label/weight=1.0).
  lines = [line for line in train.stdout.splitlines()
           if line.startswith(("step 3: validation", "step 3: test", "mmjax: final test"))]
  assert len(lines) == 3 and "; validation: label/loss=" in lines[-1], train.stdout
  for line in lines:
    assert "label/accuracy=" in line and "label/loss=" in line and "examples=" in line, line
    assert "/weight=" not in line and "reg/" not in line, line
  results = json.loads((tmp_path / "results.json").read_text())
  evaluation = subprocess.run([sys.executable, "-m", "mmjax.cli", "eval", *common], env=env,
                              capture_output=True, text=True)
  assert evaluation.returncode == 0, evaluation.stderr[-2000:]
  evaluated = json.loads((tmp_path / "eval_results.json").read_text())
  assert evaluated == {k: v for k, v in results.items() if k != "complexity"}
  usage = subprocess.run([sys.executable, "-m", "mmjax.cli", "fit", *common], env=env,
                         capture_output=True, text=True)
  assert usage.returncode != 0 and "usage: mmjax {train|eval|analyze|predict|export|sweep}" in usage.stderr


def test_trainer_feeds_the_batches_of_its_config_seed(data_dir, tmp_path, monkeypatch):
  """The batch the trainer trains on at step s is the pipeline's batch (config.seed, s)."""
  config = tiny_config(data_dir, total_steps=2)
  config.seed = 3
  seen = []
  original = loop.data.train_batches

  def recording(reader, batch_size, **kwargs):
    for batch in original(reader, batch_size, **kwargs):
      seen.append((reader, batch))
      yield batch

  monkeypatch.setattr(loop.data, "train_batches", recording)
  loop.train_and_evaluate(config, str(tmp_path))
  reader, first = seen[0]
  expected = reader.read(train_batch_indices(3, 0, config.batch_size, len(reader)))
  for key in expected:
    np.testing.assert_array_equal(first[key], expected[key])


def test_dropout_masks_differ_between_steps_and_repeat_for_the_same_step(data_dir):
  """The step's dropout key is the run's key folded with the step number: the same parameters
  and batch give another loss at another step, the same loss at the same step."""
  config = tiny_config(data_dir)
  readers, tasks, _, state, step_rng = loop._setup(config)[:5]
  _, schedule = make_optimizer(config.optimizer, config.total_steps)
  batch = next(data.eval_batches(readers["train"], config.batch_size))
  step = jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule))
  loss_at = lambda s, rng=step_rng: float(
      step(state.replace(step=s), batch, rng)[1]["values"]["loss"])
  assert loss_at(0) == loss_at(0)
  assert loss_at(0) != loss_at(1)
  assert loss_at(1) != loss_at(1, jax.random.key(99))


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_non_finite(data_dir, tmp_path):
  """on_nonfinite='stop' with a checkpoint every step: the error names the step, and the latest
  checkpoint is the step before it, finite (bug caught: checking only at log steps would save
  the steps in between; saving before the check would save the failed step)."""
  config = tiny_config(data_dir, total_steps=6)
  config.optimizer.learning_rate = 1e30
  config.optimizer.warmup_steps = 0
  config.log_every_steps = config.checkpoint_every_steps = config.evals.validation.every_steps = 6
  config.checkpoint_every_steps = 1
  with pytest.raises(NonFiniteError, match=r"step (\d+): the loss of task 'label'.* went "
                     r"non-finite .*latest checkpoint: step (\d+)") as error:
    loop.train_and_evaluate(config, str(tmp_path))
  failed, latest = map(int, re.search(r"step (\d+):.*step (\d+)\)", str(error.value)).groups())
  assert latest == failed - 1
  manager = checkpoint.checkpoint_manager(str(tmp_path), 1, "loss", "min", read_only=True)
  assert manager.latest_step() == latest
  saved = checkpoint.restore_raw(manager)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved["params"]))


def test_skipped_non_finite_steps_are_counted_logged_and_not_applied(data_dir, tmp_path,
                                                                     monkeypatch):
  """on_nonfinite='skip': a batch with a NaN image at step 3 is skipped (the run ends, finite);
  its train line says so and averages the other steps only; the state counts it."""
  config = tiny_config(data_dir, total_steps=4)
  config.on_nonfinite = "skip"
  original = loop.data.train_batches

  def poisoned(reader, batch_size, **kwargs):
    for step, batch in enumerate(original(reader, batch_size, **kwargs), start=1):
      if step == 3:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(loop.data, "train_batches", poisoned)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results["test"]["loss"])
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = {line["step"]: line for line in lines if line["split"] == "train"}
  assert train[2]["skipped_steps"] == 0 and train[4]["skipped_steps"] == 1
  assert np.isfinite(train[4]["loss"])
  state = loop.restore_checkpoint(config, str(tmp_path)).state
  assert int(state.skipped_steps) == 1 and int(state.step) == 4


def test_results_report_each_split_evaluated_on_its_own_examples(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=2)
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["validation"]["examples"] == 1000 and results["test"]["examples"] == 2000
  readers, tasks, _, final = loop.restore_checkpoint(config, str(tmp_path))[:4]
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  test = evaluate(eval_fn, final, data.eval_batches(readers["test"], 2000), tasks)
  for key, value in test.items():
    assert results["test"][key] == pytest.approx(value, rel=1e-5), key


def test_metrics_do_not_depend_on_the_eval_batch_size_or_its_padding(data_dir):
  """The last eval batch is padded with copies of its first example (weight 0). With a batch size
  chosen so that this copy is classified correctly, counting the padding would raise accuracy."""
  config = tiny_config(data_dir)
  readers, tasks, _, state = loop._setup(config)[:4]
  reader = readers["validation"]
  everything = reader.read(np.arange(len(reader)))
  logits = state.apply_fn({"params": state.params}, everything)["label"]
  correct = np.asarray(jnp.argmax(logits, axis=-1) == everything["label"])
  size = len(reader)
  batch_size = next(b for b in range(2, size) if size % b and correct[(size // b) * b])
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  whole = evaluate(eval_fn, state, data.eval_batches(reader, size), tasks)
  padded = evaluate(eval_fn, state, data.eval_batches(reader, batch_size), tasks)
  assert padded["examples"] == whole["examples"] == size
  for key, value in whole.items():
    assert padded[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.parametrize("override,message", [
    ("--config.batch_size=0", "mmjax: error: config.batch_size=0 must be positive"),
    ("--config.model.fusion.rankk=8", "mmjax: error: --config.model.fusion.rankk: "
     "config.model.fusion has no field 'rankk'; its fields are: dtype, name"),
])
def test_cli_reports_a_bad_config_in_one_line_with_exit_code_2(data_dir, tmp_path, override,
                                                                message):
  result = subprocess.run([sys.executable, "-m", "mmjax.cli", "train", f"--config={SEED_CONFIG}",
                           f"--workdir={tmp_path}", f"--config.dataset.data_dir={data_dir}",
                           override], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
  assert result.returncode == 2
  assert result.stderr.strip() == message


def test_results_report_the_runs_complexity(data_dir, tmp_path):
  """Parameters as counted, XLA's FLOPs per example of the compiled steps (a train step, with
  its backward pass, costs more than an eval step: bug caught, dividing the eval step's count
  by the train batch size, 16 instead of 1,000), speeds, the compile time, and no accelerator
  memory on the CPU ('n/a', not host RSS)."""
  config = tiny_config(data_dir, total_steps=4)
  results = loop.train_and_evaluate(config, str(tmp_path))
  complexity = json.load(open(tmp_path / "results.json"))["complexity"]
  assert complexity == json.loads(json.dumps(results["complexity"]))
  state = loop.restore_checkpoint(config, str(tmp_path)).state
  assert complexity["parameters"] == sum(x.size for x in jax.tree.leaves(state.params))
  assert complexity["train_flops_per_example"] > complexity["eval_flops_per_example"] > 0
  assert complexity["compile_seconds"] > 0 and complexity["train_samples_per_second"] > 0
  assert complexity["eval_samples_per_second"] > 0
  assert complexity["peak_memory_bytes"] == "n/a"


def test_train_examples_trains_on_the_first_n_examples_of_the_split(data_dir, tmp_path,
                                                                   monkeypatch):
  """Learning curves: `dataset.train_examples` = N reads the train split's first N rows only (a
  reader of the whole split would pass every other test)."""
  config = tiny_config(data_dir, total_steps=2)
  config.dataset.train_examples = 48
  read = []
  original = loop.data.train_batches
  monkeypatch.setattr(loop.data, "train_batches", lambda reader, *args, **kwargs: (
      read.append(reader.read(np.arange(len(reader)))) or original(reader, *args, **kwargs)))
  loop.train_and_evaluate(config, str(tmp_path))
  whole = data.ExampleReader(data.prepare("mm_shapes", data_dir), "train")
  assert len(read) == 1 and len(read[0]["label"]) == 48
  np.testing.assert_array_equal(read[0]["label"], whole.read(np.arange(48))["label"])


@pytest.mark.parametrize("split", ["train[:50%]", "train+validation"])
def test_train_examples_and_a_sliced_or_combined_split_are_refused_together(data_dir, tmp_path,
                                                                           split):
  """'train+validation' with train_examples N would read all of train plus N validation rows."""
  config = tiny_config(data_dir)
  config.dataset.train_split, config.dataset.train_examples = split, 10
  with pytest.raises(loop.ConfigError, match=re.escape(
      f"config.dataset.train_examples=10 with config.dataset.train_split={split!r}: slice one "
      "split by one of them, not both")):
    loop.train_and_evaluate(config, str(tmp_path))


def test_eval_task_loss_is_the_mean_over_that_tasks_labelled_examples_only(data_dir):
  """Two eval batches in which 'label' is marked (`label_mask`) on only some examples: those of
  the first batch with a loss above its median, and every third example of the second. The
  reported `label/loss` is the mean per-example cross-entropy over the labelled examples only,
  computed here from the model's logits; `label/accuracy` and `label/examples` count them only,
  `examples` counts all (bug caught: the task's summed loss divided by every example)."""
  config = tiny_config(data_dir)
  del config.model.encoders["text"]   # an image-only model compiles in seconds
  readers, tasks, _, state = loop._setup(config)[:4]
  reader = readers["validation"]
  batches = [reader.read(np.arange(0, 32)), reader.read(np.arange(32, 64))]
  losses, correct = [], []
  for batch in batches:
    logits = state.apply_fn({"params": state.params}, batch)["label"]
    losses.append(np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"])))
    correct.append(np.asarray(jnp.argmax(logits, axis=-1) == batch["label"]))
  batches[0]["label_mask"] = losses[0] > np.median(losses[0])
  batches[1]["label_mask"] = np.arange(len(losses[1])) % 3 == 0
  masks = [batch["label_mask"] for batch in batches]
  labelled = np.concatenate([loss[mask] for loss, mask in zip(losses, masks)])
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  found = evaluate(eval_fn, state, iter(batches), tasks)
  assert found["examples"] == 64 and found["label/examples"] == len(labelled) == 16 + 11
  assert found["label/loss"] == pytest.approx(float(labelled.mean()), rel=1e-5)
  assert abs(labelled.mean() - np.concatenate(losses).mean()) > 1e-3   # the mask matters
  assert found["label/accuracy"] == pytest.approx(
      np.concatenate([c[m] for c, m in zip(correct, masks)]).mean(), rel=1e-6)
  assert found["loss"] == pytest.approx(found["label/loss"], rel=1e-6)   # weight 1, no regs
