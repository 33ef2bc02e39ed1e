"""Malformed batches and configs at the public entry points other than `MultimodalModel.apply`
(`tests/test_model_inputs.py`): `train_step` under jit and the trainer (`mmjax train` / `mmjax
eval`). Each case is a one-line error raised before anything is compiled or saved, or a step
that is flagged non-finite and applies nothing; never a finite wrong number."""
import functools

import jax
import numpy as np
import pytest

from mmjax import data, evaluate
from mmjax.errors import DataError, WorkdirError
from mmjax.model import model_from_config
from mmjax.tasks.objective import tasks_from_config
from mmjax.train import checks, loop
from mmjax.train.state import make_optimizer
from mmjax.train.step import train_step
from mmjax.train.defaults import load_config

from config_helpers import write_config


@pytest.fixture(scope="module")
def seed_step(data_dir, tmp_path_factory):
  """The small seed model's state, one clean train batch and its jitted step."""
  config = load_config(write_config(tmp_path_factory.mktemp("fuzz") / "run.py", data_dir))
  readers, tasks, _, state = loop._setup(config)[:4]
  batch = next(data.eval_batches(readers["train"], config.batch_size))
  batch.pop("weight")
  _, schedule = make_optimizer(config.optimizer, config.total_steps)
  return state, batch, jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule))


def _with(batch, key, value):
  return {**batch, key: value}


REJECTED = {
    "missing text": (lambda b: {k: v for k, v in b.items() if k != "text"}, "has no 'text'"),
    "image without channels": (lambda b: _with(b, "image", b["image"][..., 0]),
                               r"batch\['image'\] has shape \(8, 32, 32\)"),
    "float token ids": (lambda b: _with(b, "text", b["text"].astype(np.float32)),
                        "reads integer token ids"),
    "batch sizes disagree": (lambda b: _with(b, "image", b["image"][:4]),
                             "disagree on the batch size"),
    "zero-length text": (lambda b: _with(b, "text", b["text"][:, :0]), "with T = 0"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_a_malformed_batch_is_a_one_line_error_while_tracing_the_step(seed_step, case):
  state, batch, step = seed_step
  corrupt, message = REJECTED[case]
  with pytest.raises(DataError, match=message) as error:
    step(state, corrupt(dict(batch)), jax.random.key(0))
  assert "\n" not in str(error.value)


def _set(batch, key, row, value):
  array = np.array(batch[key])
  array[row] = value
  return {**batch, key: array}


FLAGGED = {
    # one-hot of an out-of-range class is all zeros: a finite wrong loss without the guard
    "label = num_classes": (lambda b: _set(b, "label", 0, 9), "task"),
    "label = -1": (lambda b: _set(b, "label", 5, -1), "task"),
    # a negative id would wrap around to a real embedding row under a plain gather
    "token id = -1": (lambda b: _set(b, "text", (2, 0), -1), "group"),
    "token id = vocab_size": (lambda b: _set(b, "text", (2, 0), 64), "group"),
    "NaN image": (lambda b: _set(b, "image", 1, np.nan), "group"),
    "Inf image": (lambda b: _set(b, "image", 1, np.inf), "group"),
}


@pytest.mark.parametrize("case", list(FLAGGED))
def test_a_bad_value_under_jit_is_flagged_and_applies_nothing(seed_step, case):
  """Values cannot be checked while tracing: they reach the loss or the gradients as NaN, the
  step says so (the task's loss, or a parameter group's gradients) and changes nothing."""
  state, batch, step = seed_step
  corrupt, culprit = FLAGGED[case]
  clean_after, clean = step(state, batch, jax.random.key(0))
  assert bool(clean["finite"]["step"])
  after, metrics = step(state, corrupt(dict(batch)), jax.random.key(0))
  finite = jax.device_get(metrics["finite"])
  assert not finite["step"]
  if culprit == "task":
    assert not finite["tasks"].any()
  else:
    assert not all(finite["groups"].values())
  for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


BATCHES = {
    "label out of range": (lambda b: _set(b, "label", 3, 9),
                           r"^here: 'label' holds class 9 at row 3, outside task 'label''s 9 "
                           r"classes \[0, 9\); fix the labels or config.model.heads.label"),
    "negative label": (lambda b: _set(b, "label", 6, -1), "holds class -1 at row 6"),
    "token id out of range": (lambda b: _set(b, "text", (1, 2), 64),
                              r"^here: batch\['text'\] has token id 64 at position \(1, 2\)"),
    "image shape changes": (lambda b: _with(b, "image", b["image"][:, :16]),
                            r"^here: 'image' has shape \(8, 16, 32, 3\) and dtype float32, but "
                            r"the model was built for \(8, 32, 32, 3\) float32"),
    "label key missing": (lambda b: {k: v for k, v in b.items() if k != "label"},
                          r"^here lacks \['label'\]"),
    "wrong dtype": (lambda b: _with(b, "image", b["image"].astype(np.float64)),
                    "dtype float64, but the model was built for"),
    "rows of another batch size": (lambda b: {k: v[:4] for k, v in b.items()},
                                   r"has shape \(4, .*but the model was built for \(8,"),
}


@pytest.fixture(scope="module")
def batch_check(data_dir, tmp_path_factory):
  """The trainer's check of every batch, for the small seed config, and one clean batch."""
  config = load_config(write_config(tmp_path_factory.mktemp("check") / "run.py", data_dir))
  builder = data.prepare("mm_shapes", data_dir)
  batch = data.ExampleReader(builder, "train").read(np.arange(config.batch_size))
  check = checks.BatchCheck(config, batch, tasks_from_config(config.tasks),
                            model_from_config(config.model))
  return check, batch


@pytest.mark.parametrize("case", list(BATCHES))
def test_every_batch_is_checked_on_the_host_against_the_first(batch_check, case):
  check, batch = batch_check
  check(batch, "here", 8)   # the clean batch passes
  corrupt, message = BATCHES[case]
  with pytest.raises(DataError, match=message) as error:
    check(corrupt(dict(batch)), "here", 8)
  assert "\n" not in str(error.value)


def test_a_padding_row_or_an_unlabelled_row_may_hold_any_label(batch_check):
  """Padding (weight 0) and unlabelled rows (mask 0) are zeroed before the loss: their labels
  are not checked (bug caught: checking every row, which rejects valid padded eval batches)."""
  check, batch = batch_check
  padded = dict(_set(batch, "label", 7, 99), weight=np.float32([1] * 7 + [0]))
  check(padded, "here", 8)
  unlabelled = dict(_set(batch, "label", 2, -5), label_mask=np.array([1, 1, 0, 1, 1, 1, 1, 1]))
  check(unlabelled, "here", 8)


def test_the_trainer_names_the_step_of_a_bad_batch_before_it_reaches_the_step(
    data_dir, tmp_path, monkeypatch):
  """A bad batch from the data at step 2: one line naming the step, the key and the fix; the
  checkpoint of step 1 is all that is saved."""
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=3,
                                    checkpoint_every_steps=1))
  original = loop.data.train_batches

  def bad_at_step_2(reader, batch_size, **kwargs):
    for step, batch in enumerate(original(reader, batch_size, **kwargs), start=1):
      yield _set(batch, "label", 3, 9) if step == 2 else batch

  monkeypatch.setattr(loop.data, "train_batches", bad_at_step_2)
  with pytest.raises(DataError, match=r"^the batch of step 2 \(split 'train'\): 'label' holds "
                     r"class 9 at row 3") as error:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(error.value)
  assert loop.restore_checkpoint(config, str(tmp_path / "run")).state.step == 1


def test_eval_of_a_step_never_saved_names_the_saved_steps(data_dir, tmp_path):
  config = load_config(write_config(tmp_path / "run.py", data_dir, total_steps=2))
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  with pytest.raises(WorkdirError, match=r"no checkpoint at step 7 .*saved steps are \[2\]"):
    evaluate.evaluate_checkpoint(config, str(tmp_path / "run"), step=7)
