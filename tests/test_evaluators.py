"""Evaluators (`mmjax/evaluators/`): every registered one through the trainer, `mmjax eval` and
the registry; whole-split retrieval against a brute-force ranking; the linear probe against an
independent ridge regression."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from mmjax import evaluate, evaluators, registry
from mmjax.errors import ConfigError
from mmjax.evaluators import linear_probe, retrieval
from mmjax.train import loop
from mmjax.train.state import evaluation_params

from config_helpers import every_evaluator_config
from process_helpers import finish, free_port, host_devices_env


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """A run of 4 steps with every registered evaluator every 2 steps."""
  config = every_evaluator_config(data_dir)
  workdir = str(tmp_path_factory.mktemp("every_evaluator"))
  results = loop.train_and_evaluate(config, workdir)
  return config, workdir, results


@pytest.mark.parametrize("name", sorted(evaluators.EVALUATORS))
def test_every_evaluator_is_configurable_field_by_field(name):
  """Its config lists every field, with the split and cadence every evaluator has, and builds
  back to the same evaluator."""
  constructor = evaluators.EVALUATORS[name]
  spec = evaluators.evaluator_config(name)
  assert {"split", "every_steps"} <= set(spec) - {"name"}
  assert set(spec) - {"name"} == {f.name for f in dataclasses.fields(constructor)}
  built = registry.build(evaluators.EVALUATORS, spec, "evaluator")
  assert built == constructor()


@pytest.mark.parametrize("name", sorted(evaluators.EVALUATORS))
def test_every_evaluator_runs_at_its_cadence_is_logged_and_reproduces_from_the_checkpoint(
    trained, name):
  """Logged as `<key>/<metric>` at steps 2 and 4, its final results in results.json, and `mmjax
  eval` on the saved checkpoint gives the same results (bug caught: an evaluator reading the
  training parameters where an EMA is kept, or drawing from an unseeded generator)."""
  config, workdir, results = trained
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [line["step"] for line in lines if line["split"] == name]
  assert steps == [2, 4]
  logged = [line for line in lines if line["split"] == name][-1]
  assert logged["seconds"] > 0
  scalars = evaluators.scalars(results[name])
  assert scalars and all(np.isfinite(v) for v in scalars.values())
  assert {k: v for k, v in logged.items() if k not in ("step", "split", "seconds")} == scalars
  written = json.load(open(os.path.join(workdir, "results.json")))
  assert written[name] == json.loads(json.dumps(results[name]))
  again = evaluate.evaluate_checkpoint(config, workdir)
  assert again["step"] == 4
  assert json.loads(json.dumps(again[name])) == written[name]


def test_checkpoints_are_selected_by_an_evaluators_metric(data_dir, tmp_path):
  """best_metric 'retrieval/a_to_b/R@5', keep_best 1: the checkpoints kept are the latest and the
  step with the highest R@5 logged (ties: the later step, as orbax keeps)."""
  config = every_evaluator_config(data_dir, total_steps=8)
  config.evals = ml_collections.ConfigDict({"retrieval": config.evals.retrieval,
                                            "validation": config.evals.metrics})
  config.checkpoint.keep_best = 1
  loop.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  recall = {line["step"]: line["a_to_b/R@5"] for line in lines if line["split"] == "retrieval"}
  assert sorted(recall) == [2, 4, 6, 8] and len(set(recall.values())) > 1
  best = sorted(recall, key=lambda step: (recall[step], step))[-1]
  kept = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
  assert kept == sorted({best, 8})


@pytest.mark.parametrize("best_metric,message", [
    ("label/accuracy", "use '<evaluator>/<metric>' with an evaluator of config.evals"),
    ("retrieval/R@1", "config.evals.retrieval cannot select checkpoints by 'R@1': its metrics "
                      "are a_to_b/R@1"),
    ("robustness/clean/label/accuracy", "it reports curves"),
    ("linear_probe/mse", "its metrics are accuracy"),
])
def test_a_best_metric_no_evaluator_reports_is_one_config_error(data_dir, best_metric, message):
  config = every_evaluator_config(data_dir)
  config.checkpoint.best_metric = best_metric
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    loop._setup(config)


@pytest.mark.parametrize("key,fields,message", [
    ("retrieval", dict(task="label"), "task='label' is not a contrastive task; set it to one of "
                                      r"\['pair'\]"),
    ("linear_probe", dict(task="pair"), "task='pair' is not a classification or regression"),
    ("linear_probe", dict(features="audio"), "use 'fused' or an encoder: image, text"),
    ("metrics", dict(every_steps=-1), "every_steps=-1"),
    ("metrics", dict(split="tset"), "split 'tset' of dataset 'mm_shapes'"),
    ("metrics", dict(colour="red"), "evaluator 'metrics' has no field colour"),
])
def test_a_bad_evaluator_config_is_one_config_error(data_dir, key, fields, message):
  config = every_evaluator_config(data_dir)
  config.checkpoint.best_metric = "metrics/loss"
  config.evals[key].update(fields)
  with pytest.raises(ConfigError, match=message):
    loop._setup(config)


def brute_force_ranks(queries, candidates):
  """1 + #{j ≠ i : s_ij ≥ s_ii} from the whole similarity matrix, in float64."""
  similarity = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
  positive = np.diag(similarity)[:, None]
  ties_or_better = similarity >= positive
  np.fill_diagonal(ties_or_better, False)
  return 1 + ties_or_better.sum(axis=1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 4096])
def test_chunked_ranks_equal_the_brute_force_ranking_with_ties_counted_against(chunk):
  """1,000 queries, with exact ties (duplicated candidates and a constant block): every chunk
  size gives the brute-force ranks (bugs caught: a tie counted in the model's favour, the query's
  own positive counted, padding columns of the last chunk counted)."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(1000, 16)).astype(np.float32)
  b = (a + rng.normal(size=a.shape)).astype(np.float32)
  b[5], a[9] = b[7], a[3]
  b[20:30] = b[20]
  expected = brute_force_ranks(a, b)
  np.testing.assert_array_equal(retrieval.ranks(a, b, chunk), expected)
  assert expected[20:30].min() >= 10        # each of the 10 tied candidates ranks the others first
  # A collapsed model: every similarity ties, every positive is last.
  constant = np.ones((50, 4), np.float32)
  np.testing.assert_array_equal(retrieval.ranks(constant, constant, chunk), np.full(50, 50))


def test_retrieval_metrics_are_recall_at_k_and_rank_statistics_of_those_ranks():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(300, 8)).astype(np.float32)
  b = (a + 0.8 * rng.normal(size=a.shape)).astype(np.float32)
  found = retrieval.retrieval_metrics(a, b, ks=(1, 5, 10), chunk=64)
  for direction, (q, c) in (("a_to_b", (a, b)), ("b_to_a", (b, a))):
    ranks = brute_force_ranks(q, c)
    for k in (1, 5, 10):
      assert found[f"{direction}/R@{k}"] == np.mean(ranks <= k)
    assert found[f"{direction}/median_rank"] == np.median(ranks)
    assert found[f"{direction}/mean_rank"] == pytest.approx(np.mean(ranks))
  assert found["examples"] == 300
  assert found["a_to_b/R@1"] != found["b_to_a/R@1"]   # the two directions differ here


def whole_split(config, run, split):
  """Every example of `split` as one host batch."""
  reader = run.readers[split]
  return reader.read(np.arange(len(reader)))


def test_whole_split_retrieval_equals_the_brute_force_ranking_of_the_models_embeddings(trained):
  """The evaluator's numbers are the brute-force ranking of the embeddings the model gives every
  validation example in one call: the 200 padding rows of the last eval batch count nowhere (bug
  caught: padded copies ranked as candidates) and no batch is left out."""
  config, workdir, results = trained
  run = loop.restore_checkpoint(config, workdir)
  batch = whole_split(config, run, "validation")
  outputs = run.state.apply_fn({"params": evaluation_params(run.state)}, batch)["pair"]
  a, b = np.asarray(outputs["a"]), np.asarray(outputs["b"])
  assert len(a) == 1000
  for direction, (q, c) in (("a_to_b", (a, b)), ("b_to_a", (b, a))):
    ranks = brute_force_ranks(q, c)
    for k in (1, 5, 10):
      assert results["retrieval"][f"{direction}/R@{k}"] == pytest.approx(np.mean(ranks <= k),
                                                                         abs=1e-9)
    assert results["retrieval"][f"{direction}/median_rank"] == np.median(ranks)
  assert results["retrieval"]["examples"] == 1000


def test_ridge_equals_scikit_learns_on_the_whitened_features_in_both_forms():
  """`fit_ridge` is scikit-learn's Ridge (no intercept) on the features whitened by their mean
  and std and augmented with the constant 100, in its primal (N ≥ D) and dual (N < D) forms."""
  from sklearn.linear_model import Ridge
  rng = np.random.default_rng(2)
  for count, width in ((200, 12), (10, 40)):
    x = rng.normal(size=(count, width)) * 3 + 1
    y = rng.normal(size=(count, 3))
    weights, mean, std = linear_probe.fit_ridge(x, y, 2.0 ** 10)
    augmented = np.concatenate([(x - x.mean(0)) / (x.std(0) + 1e-5),
                                np.full((count, 1), 100.0)], axis=1)
    reference = Ridge(alpha=2.0 ** 10, fit_intercept=False, solver="svd").fit(augmented, y)
    np.testing.assert_allclose(weights, reference.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mean, x.mean(0))


def test_the_probe_whitens_the_test_split_by_the_train_subsets_statistics():
  """Train features centred at 0, test features shifted by +3 along the class direction: a probe
  that whitened the test split by its own statistics would undo the shift and score 1.0 (bug
  caught); with the train statistics every test example is classified as class 1."""
  rng = np.random.default_rng(3)
  labels = np.arange(400) % 2
  train = rng.normal(size=(400, 2)) * 0.1
  train[:, 0] += np.where(labels == 1, 1.0, -1.0)
  test = train.copy()
  test[:, 0] += 3.0
  found = linear_probe.probe_metrics(train, labels, test, labels, num_classes=2, l2=1.0)
  assert found["accuracy"] == 0.5
  assert linear_probe.probe_metrics(train, labels, train, labels, num_classes=2,
                                    l2=1.0)["accuracy"] == 1.0
  targets = train[:, :1] * 2.0 - 0.5
  fitted = linear_probe.probe_metrics(train, targets, train, targets, num_classes=None, l2=1e-6)
  assert fitted["mse"] < 1e-8 and fitted["train_examples"] == 400


def test_the_linear_probe_fits_the_train_subset_and_scores_the_split(trained):
  """The evaluator's accuracy is `probe_metrics` on the fused features the model gives the first
  700 train examples and every validation example, each in one call."""
  config, workdir, results = trained
  run = loop.restore_checkpoint(config, workdir)
  params = {"params": evaluation_params(run.state)}
  reader = run.readers["train"]
  train = reader.read(np.arange(700))
  validation = whole_split(config, run, "validation")
  fused = lambda batch: np.asarray(run.state.apply_fn(params, batch, method="fused"))
  expected = linear_probe.probe_metrics(fused(train), train["label"], fused(validation),
                                        validation["label"], num_classes=9, l2=2.0 ** 10)
  assert results["linear_probe"]["examples"] == 1000
  assert results["linear_probe"]["train_examples"] == 700
  assert results["linear_probe"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-3)


def test_each_modality_subset_scores_as_a_separate_evaluation_with_the_others_masked(trained):
  """Every non-empty subset, none empty; the whole set is the `metrics` evaluator's number, and a
  single modality's is the accuracy of the model on the split with the other modality zeroed and
  masked by hand."""
  config, workdir, results = trained
  found = results["modality_subsets"]["subsets"]
  assert list(found) == ["image+text", "image", "text"]
  assert found["image+text"]["label/accuracy"] == results["metrics"]["label/accuracy"]
  run = loop.restore_checkpoint(config, workdir)
  params = {"params": evaluation_params(run.state)}
  validation = whole_split(config, run, "validation")
  without = {"text": lambda b: {**b, "text": np.zeros_like(b["text"]),
                                "text_mask": np.zeros(b["text"].shape, bool)},
             "image": lambda b: {**b, "image": np.zeros_like(b["image"]),
                                 "image_mask": np.zeros(len(b["image"]), bool)}}
  for kept, dropped in (("image", "text"), ("text", "image")):
    logits = np.asarray(run.state.apply_fn(params, without[dropped](validation))["label"])
    expected = float(np.mean(logits.argmax(axis=1) == validation["label"]))
    assert found[kept]["label/accuracy"] == pytest.approx(expected, abs=1e-6), kept
  assert found["image"] != found["text"]


SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                      "evaluate_on_devices.py")


def _reported(output):
  return json.loads(output.strip().splitlines()[-1])


def _assert_same_evaluation(found, expected):
  """Retrieval and example counts exactly; the probe and metrics to float32 summation order."""
  assert found["retrieval"] == expected["retrieval"]
  assert found["linear_probe"]["examples"] == expected["linear_probe"]["examples"]
  assert found["linear_probe"]["accuracy"] == pytest.approx(expected["linear_probe"]["accuracy"],
                                                            abs=2e-3)
  for key, value in expected["metrics"].items():
    assert found["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("driver", ["jit", "pmap"])
def test_evaluators_on_8_devices_equal_those_on_one(trained, data_dir, driver):
  """Whole-split retrieval, the probe and the metrics of the checkpoint on 8 CPU devices (75
  rows of each eval batch per device, the padding on the last ones) equal one device's."""
  config, workdir, results = trained
  output = subprocess.run([sys.executable, SCRIPT, data_dir, workdir, driver],
                          capture_output=True, text=True, timeout=600,
                          env=host_devices_env(8))
  assert output.returncode == 0, output.stderr[-3000:]
  found = _reported(output.stdout)
  assert found["devices"] == 8
  _assert_same_evaluation(found, results)


def test_evaluators_in_two_processes_equal_those_of_one(trained, data_dir):
  """2 processes × 2 CPU devices (gloo): each reads its rows of every eval batch, the
  embeddings and features are gathered from both, and both processes report one process's
  numbers."""
  config, workdir, results = trained
  coordinator = f"127.0.0.1:{free_port()}"
  processes = [subprocess.Popen([sys.executable, SCRIPT, data_dir, workdir, "jit", str(index),
                                 "2", coordinator], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "TQDM_DISABLE": "1"}) for index in range(2)]
  reports = [_reported(output) for output in finish(processes, timeout=600)]
  assert reports[0]["devices"] == 4
  for found in reports:
    _assert_same_evaluation(found, results)


def test_a_run_written_before_config_evals_resumes(data_dir, tmp_path):
  """A workdir whose stored config has the old evaluation fields (`eval_splits`,
  `eval_every_steps`, a best_metric without an evaluator key) resumes under the new config: they
  only chose what was evaluated."""
  config = every_evaluator_config(data_dir, total_steps=4)
  config.evals = ml_collections.ConfigDict({"validation": config.evals.metrics})
  config.checkpoint.best_metric = "validation/label/accuracy"
  loop.train_and_evaluate(config, str(tmp_path), stop_after_step=2)
  stored = json.loads((tmp_path / "config.json").read_text())
  del stored["evals"]
  stored.update(eval_splits=["validation", "test"], eval_every_steps=250)
  stored["checkpoint"]["best_metric"] = "label/accuracy"
  (tmp_path / "config.json").write_text(json.dumps(stored))
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results["validation"]["examples"] == 1000


def test_an_evaluator_run_again_compiles_nothing(trained):
  """Evaluating every N steps compiles each evaluator's functions once per run (bug caught: a
  fresh `jax.jit` of the gathered outputs at every evaluation)."""
  config, workdir, _ = trained
  run = loop.restore_checkpoint(config, workdir)
  context = run.context(config, workdir)
  chosen = {key: run.evaluators[key] for key in ("metrics", "retrieval", "linear_probe")}
  first, _ = evaluators.run_all(chosen, context, run.state)
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **kwargs: compiles.append(event)
      if event == "/jax/core/compile/backend_compile_duration" else None)
  again, _ = evaluators.run_all(chosen, context, run.state)
  assert again == first and compiles == []
