"""Reliability against real processes: SIGTERM/SIGINT stop a run with a checkpoint and exit 0, and
the resumed run ends with the uninterrupted run's parameters; SIGKILL during a save leaves the
previous checkpoint restorable; a workdir refuses another config's or model's run; the CLI turns
bad input into one line with exit code 2 (`--debug` shows the traceback)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from mmjax import evaluate
from mmjax.errors import ConfigError, WorkdirError
from mmjax.train import checkpoint, checks, loop
from mmjax.train.defaults import load_config

from config_helpers import write_config

def start_training(config_path, workdir):
  return subprocess.Popen([sys.executable, "-m", "mmjax.cli", "train", f"--config={config_path}",
                           f"--workdir={workdir}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})


def wait_for(condition, process, timeout=300.0):
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(f"the run ended first:\n{process.communicate()[1][-3000:]}")
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError("timed out")
    time.sleep(0.002)


def finished_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def final_state(config, workdir):
  return loop.restore_checkpoint(config, workdir).state


def assert_same_state(a, b):
  assert int(a.step) == int(b.step)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path((a.params, a.opt_state)),
                          jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_sigterm_saves_exits_0_and_the_resumed_run_equals_the_uninterrupted_one(data_dir,
                                                                                tmp_path):
  """A real `mmjax train` gets SIGTERM and, at once, SIGINT: it finishes its step, saves that
  step (the only checkpoint: the regular ones are far apart), says where it stopped and exits 0;
  the second signal is reported, not obeyed. Resumed with a shorter (allowed) total_steps, it
  ends with exactly the parameters and optimizer state of a run never interrupted, and its
  metrics log every step once (bug caught: a handler that only sets the flag after the next
  log line; a resume that re-logs the steps after the checkpoint)."""
  path = write_config(tmp_path / "run.py", data_dir, total_steps=100_000, log_every_steps=1,
                      evals__validation__every_steps=100_000, checkpoint_every_steps=100_000)
  workdir = str(tmp_path / "preempted")
  process = start_training(path, workdir)
  metrics = os.path.join(workdir, "metrics.jsonl")
  wait_for(lambda: os.path.exists(metrics) and len(open(metrics).readlines()) >= 3, process)
  process.send_signal(signal.SIGTERM)
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert "received again" in stderr
  # Pending signals are handled in signal-number order: SIGINT may be "the first".
  stopped = [line for line in stdout.splitlines() if re.search("stopped by SIG(TERM|INT)", line)]
  assert len(stopped) == 1, stdout[-2000:]
  step = int(stopped[0].split(" at step ")[1].split()[0])
  assert finished_steps(workdir) == [step]

  config = load_config(path)
  config.total_steps = step + 3
  loop.train_and_evaluate(config, workdir)
  loop.train_and_evaluate(config, str(tmp_path / "straight"))
  assert_same_state(final_state(config, workdir), final_state(config, str(tmp_path / "straight")))
  logged = [json.loads(line)["step"] for line in open(metrics)
            if json.loads(line)["split"] == "train"]
  assert logged == list(range(1, step + 4))


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_to_resume_from(data_dir, tmp_path):
  """A model with a 12.8M-parameter embedding makes each save ~150 MB; the run is killed with
  SIGKILL as soon as the save of step 4 has begun (its temporary folder exists). The half-written
  save is never taken for a checkpoint: the latest is step 2, it restores, and the next run
  resumes from it to the uninterrupted run's exact parameters (bug caught: writing a checkpoint
  in place, so a kill leaves a `4/` folder that does not restore)."""
  big = dict(vocab_size=400_000, embed_dim=32)
  path = write_config(tmp_path / "run.py", data_dir, **big, total_steps=100_000,
                      log_every_steps=100_000, evals__validation__every_steps=100_000, checkpoint_every_steps=2)
  workdir = str(tmp_path / "killed")
  process = start_training(path, workdir)
  directory = os.path.join(workdir, "checkpoints")
  saving_4 = lambda: os.path.isdir(directory) and any(
      name.startswith("4.") or (name.startswith("4") and not name.isdigit() and "tmp" in name)
      for name in os.listdir(directory))
  wait_for(lambda: os.path.isdir(os.path.join(directory, "2")) and saving_4(), process)
  process.kill()
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert finished_steps(workdir) == [2], os.listdir(directory)

  config = load_config(path)
  config.total_steps = 4
  manager = checkpoint.checkpoint_manager(workdir, 1, "loss", "min", read_only=True)
  assert manager.latest_step() == 2
  loop.train_and_evaluate(config, workdir)
  loop.train_and_evaluate(config, str(tmp_path / "straight"))
  assert_same_state(final_state(config, workdir), final_state(config, str(tmp_path / "straight")))


def test_a_workdir_refuses_another_configs_run_and_names_the_field(data_dir, tmp_path):
  """config.json is stored with the run: resuming with another model is refused naming the
  field and both values, before anything is compiled; total_steps may change (bug caught:
  comparing only the model, or refusing every change)."""
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  changed = load_config(str(tmp_path / "run.py"))
  changed.model.encoders.text.hidden_dim = 16
  with pytest.raises(WorkdirError, match=r"holds a run of another config: "
                     r"model\.encoders\.text\.hidden_dim: 8 -> 16; use a new --workdir"):
    loop.train_and_evaluate(changed, workdir)
  changed = load_config(str(tmp_path / "run.py"))
  changed.optimizer.learning_rate = 0.5
  with pytest.raises(WorkdirError, match=r"optimizer\.learning_rate: 0\.002 -> 0\.5"):
    loop.train_and_evaluate(changed, workdir)
  longer = load_config(str(tmp_path / "run.py"))
  longer.total_steps = 3
  assert loop.train_and_evaluate(longer, workdir)["test"]["examples"] == 2000
  assert json.load(open(os.path.join(workdir, "config.json")))["total_steps"] == 3


def test_a_checkpoint_of_another_model_is_refused_naming_the_parameter_and_shapes(data_dir,
                                                                                  tmp_path):
  """Without a stored config (a workdir from elsewhere), the checkpoint's own arrays are
  compared: the message names the first parameter that differs and both shapes, not an orbax
  tree error."""
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  os.remove(os.path.join(workdir, "config.json"))
  config.model.encoders.text.hidden_dim = 16
  with pytest.raises(WorkdirError, match=r"holds a checkpoint \(step 2\) of another model: "
                     r"params/encoders_text/lstm_0/input_projection/bias has shape \(32,\) in the "
                     r"checkpoint and \(64,\) in this config"):
    loop.train_and_evaluate(config, workdir)
  with pytest.raises(WorkdirError, match="of another model"):
    evaluate.evaluate_checkpoint(config, workdir)


@pytest.mark.parametrize("workdir, message", [
    ("", "--workdir is empty"),
    ("FILE", "is a file; give a directory"),
    ("/proc/mmjax_cannot_write_here", "is not writable"),
])
def test_a_workdir_that_cannot_be_used_is_one_line(data_dir, tmp_path, workdir, message):
  if workdir == "FILE":
    workdir = str(tmp_path / "file")
    open(workdir, "w").close()
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  with pytest.raises(WorkdirError, match=message) as error:
    loop.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)


def test_a_bad_nonfinite_policy_is_named(data_dir, tmp_path):
  config = load_config(write_config(tmp_path / "run.py", data_dir, on_nonfinite="ignore"))
  with pytest.raises(ConfigError, match="config.on_nonfinite='ignore'; use one of stop, skip"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_cli_prints_one_error_line_with_exit_code_2_and_debug_shows_the_traceback(data_dir,
                                                                                  tmp_path):
  path = write_config(tmp_path / "run.py", data_dir, total_steps=2)
  env = {**os.environ, "TQDM_DISABLE": "1"}
  command = [sys.executable, "-m", "mmjax.cli", "eval", f"--config={path}",
             f"--workdir={tmp_path / 'never_trained'}"]
  plain = subprocess.run(command, env=env, capture_output=True, text=True)
  assert plain.returncode == 2
  errors = [line for line in plain.stderr.splitlines() if line.startswith("mmjax: error:")]
  assert len(errors) == 1 and "no checkpoint in" in errors[0] and "Traceback" not in plain.stderr
  debug = subprocess.run(command + ["--debug"], env=env, capture_output=True, text=True)
  assert debug.returncode != 0 and "Traceback" in debug.stderr and "WorkdirError" in debug.stderr


def test_a_trainer_field_added_since_the_run_is_no_change_at_its_default(data_dir, tmp_path):
  """A run written before `dataset.train_examples` existed resumes; the field at another value
  is a change (bug caught: every field a newer mmjax adds blocks every older run's resume)."""
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  workdir = str(tmp_path)
  checks.store_config(workdir, config)
  path = os.path.join(workdir, "config.json")
  stored = json.load(open(path))
  del stored["dataset"]["train_examples"]
  json.dump(stored, open(path, "w"))
  assert checks.config_changes(workdir, config) == []
  config.dataset.train_examples = 64
  assert checks.config_changes(workdir, config) == [("dataset.train_examples", 0, 64)]
  config.dataset.train_examples = 0   # a default group the run filled (options.*) is not added
  config.dataset.options = ml_collections.ConfigDict({"image_size": 64})
  checks.store_config(workdir, config)
  assert checks.config_changes(workdir, config) == []


def test_training_gives_the_callers_sigterm_and_sigint_handlers_back_when_it_returns_or_raises(
    data_dir, tmp_path, monkeypatch):
  """A library caller (a sweep running several trainings in one process) has its own SIGTERM and
  SIGINT handlers again once a training returns, and once it raises mid-run; during the run the
  trainer's handlers are in place (bug caught: the stop handlers left installed after the run,
  so the caller's Ctrl-C or scheduler notice would only set a flag nobody reads)."""
  numbers = (signal.SIGTERM, signal.SIGINT)
  sentinels = {number: (lambda *_: None) for number in numbers}   # distinct objects
  original = {number: signal.getsignal(number) for number in numbers}
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  del config.model.encoders["text"]   # an image-only model compiles in seconds
  during = []
  batches = loop.data.train_batches

  def failing(reader, batch_size, **kwargs):
    source = batches(reader, batch_size, **kwargs)
    yield next(source)   # the first batch is read before the run's loop
    during.append({number: signal.getsignal(number) for number in numbers})
    raise RuntimeError("the data went away")

  try:
    for number, handler in sentinels.items():
      signal.signal(number, handler)
    assert loop.train_and_evaluate(config, str(tmp_path / "returns"))["test"]["examples"] == 2000
    assert {number: signal.getsignal(number) for number in numbers} == sentinels
    monkeypatch.setattr(loop.data, "train_batches", failing)
    with pytest.raises(RuntimeError, match="the data went away"):
      loop.train_and_evaluate(config, str(tmp_path / "raises"))
    assert len(during) == 1 and all(during[0][n] is not sentinels[n] for n in numbers), during
    assert {number: signal.getsignal(number) for number in numbers} == sentinels
  finally:
    for number, handler in original.items():
      signal.signal(number, handler)


def test_eval_refuses_a_config_whose_tasks_differ_naming_the_field_with_exit_code_2(data_dir,
                                                                                    tmp_path):
  """`mmjax eval` compares the stored run's tasks with the given config's (a task's loss or
  kind gives the checkpoint's numbers their meaning): a changed label_smoothing is one line
  naming the field and both values, exit code 2, before anything is evaluated; a field outside
  the compared ones (the learning rate) may differ (bug caught: tasks left out of the fields
  eval compares, so the checkpoint is evaluated under another loss)."""
  path = write_config(tmp_path / "run.py", data_dir, total_steps=2)
  with open(path) as file:   # an image-only model compiles in seconds
    text = file.read().replace("  return config", "  del config.model.encoders['text']\n"
                               "  return config")
  with open(path, "w") as file:
    file.write(text)
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(load_config(path), workdir)
  changed = load_config(path)
  changed.tasks.label.label_smoothing = 0.1
  with pytest.raises(WorkdirError, match=r"holds a run of another config: "
                     r"tasks\.label\.label_smoothing: 0\.0 -> 0\.1; use a new --workdir") as error:
    evaluate.evaluate_checkpoint(changed, workdir)
  assert "\n" not in str(error.value)
  assert not os.path.exists(os.path.join(workdir, "eval_results.json"))

  result = subprocess.run([sys.executable, "-m", "mmjax.cli", "eval", f"--config={path}",
                           f"--workdir={workdir}", "--config.tasks.label.label_smoothing=0.1"],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("mmjax: error:")]
  assert len(errors) == 1 and "tasks.label.label_smoothing: 0.0 -> 0.1" in errors[0], \
      result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(os.path.join(workdir, "eval_results.json"))

  other_optimizer = load_config(path)
  other_optimizer.optimizer.learning_rate = 0.5
  assert evaluate.evaluate_checkpoint(other_optimizer, workdir)["test"]["examples"] == 2000
