"""`mmjax sweep`: the grid through the real trainer, resumable, summarised as mean ± std over seeds
with complexity columns and paper numbers beside ours; the committed reference results are data
with a source and a convention for every number."""
import csv
import json
import os
import shutil
import statistics

import ml_collections
import numpy as np
import pytest

from mmjax import data, sweep
from mmjax.train import checks

from config_helpers import SEED_CONFIG
from mmjax.errors import ConfigError

from config_helpers import REPO


def tiny_sweep(data_dir):
  config = ml_collections.ConfigDict()
  config.config_file = os.path.join(REPO, "experiments", "configs", "interactions.py")
  config.axes = ml_collections.ConfigDict()
  config.axes.config_arg = ("synergy,concat", "synergy,low_rank")
  config.axes.seed = (0, 1)
  config.fixed = ml_collections.ConfigDict()
  config.fixed.total_steps = 30
  config.evaluate_at_end_only = True
  config.fixed.checkpoint_every_steps = 30
  config.fixed.eval_batch_size = 1000
  config.fixed.dataset = ml_collections.ConfigDict()
  config.fixed.dataset.data_dir = data_dir
  config.fixed.dataset.cache = ml_collections.config_dict.placeholder(str)   # left alone
  config.metrics = ("test/accuracy", "test/loss")
  config.reference = "interactions"
  return config


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("interactions/synergy", directory)
  workdir = str(tmp_path_factory.mktemp("sweep"))
  config = tiny_sweep(directory)
  config.subsets = True
  config.fixed.log_every_steps = 10
  return config, workdir, sweep.run(config, workdir)


def test_every_cell_is_trained_and_summarised_over_its_seeds(swept):
  config, workdir, rows = swept
  assert sorted(os.listdir(os.path.join(workdir, "cells"))) == [
      "config_arg=synergy_concat,seed=0", "config_arg=synergy_concat,seed=1",
      "config_arg=synergy_low_rank,seed=0", "config_arg=synergy_low_rank,seed=1"]
  with open(os.path.join(workdir, "summary.csv")) as file:
    written = list(csv.DictReader(file))
  assert len(written) == 4 and written[0]["config_arg"] == "synergy,concat"
  for row in rows:   # each row is its cell's results.json
    results = json.load(open(os.path.join(workdir, "cells", sweep.cell_name(
        {"config_arg": row["config_arg"], "seed": row["seed"]}), "results.json")))
    assert row["test/accuracy"] == results["test"]["accuracy"]
    assert row["parameters"] == results["complexity"]["parameters"]
  seeds = [r["test/accuracy"] for r in rows if r["config_arg"] == "synergy,low_rank"]
  assert seeds[0] != seeds[1]   # the seed reaches the config
  summary = {r["method"]: r for r in sweep.summarize(config, rows)}
  assert summary["synergy,low_rank"]["seeds"] == 2
  assert summary["synergy,low_rank"]["test/accuracy"]["mean"] == pytest.approx(
      statistics.mean(seeds))
  assert summary["synergy,low_rank"]["test/accuracy"]["std"] == pytest.approx(
      statistics.stdev(seeds))
  markdown = open(os.path.join(workdir, "summary.md")).read()
  assert f"| synergy,low_rank | 2 | {statistics.mean(seeds):.4f} ± {statistics.stdev(seeds):.4f}" \
      in markdown
  assert os.path.getsize(os.path.join(workdir, "summary.png")) > 0


def test_subset_and_gradient_share_columns_come_from_each_cells_evaluation_and_log(swept):
  """`subset/<subset>`: the cell's modality_subsets report (eval_results.json); `grad_share/<m>`:
  the mean over its train lines; the summary's table holds their mean ± std over seeds."""
  config, workdir, rows = swept
  for row in rows:
    directory = os.path.join(workdir, "cells", sweep.cell_name(
        {"config_arg": row["config_arg"], "seed": row["seed"]}))
    report = json.load(open(os.path.join(directory, "eval_results.json")))["modality_subsets"]
    assert sorted(report["subsets"]) == ["a", "a+b", "b"]
    assert [k for k in row if k.startswith("subset/")] == ["subset/a+b", "subset/a", "subset/b"]
    for name in ("a+b", "a", "b"):
      assert row[f"subset/{name}"] == report["subsets"][name]["label/accuracy"]
    lines = [json.loads(line) for line in open(os.path.join(directory, "metrics.jsonl"))]
    shares = [line["grad_share/a"] for line in lines if line["split"] == "train"]
    assert len(shares) > 1 and row["grad_share/a"] == pytest.approx(statistics.mean(shares))
    assert row["grad_share/a"] + row["grad_share/b"] == pytest.approx(1.0)
    assert "missing/a" not in row
  seeds = lambda key: sweep._mean_std([r[key] for r in rows
                                        if r["config_arg"] == "synergy,low_rank"])
  table = open(os.path.join(workdir, "summary.md")).read().split("Modalities")[1]
  assert "| method | subset/a+b | subset/a | subset/b | grad_share/a | grad_share/b |" in table
  assert f"| synergy,low_rank | {seeds('subset/a+b')} | {seeds('subset/a')} |" in table


def test_a_configured_subsets_evaluator_is_read_from_the_results_by_name(tmp_path, monkeypatch):
  """A cell whose config has the evaluator under its own key (AV-MNIST's `subsets`): its
  results.json report is used, nothing is evaluated again (bug caught: a KeyError looking for
  the key `modality_subsets`)."""
  config = ml_collections.ConfigDict({"evals": {"subsets": {"name": "modality_subsets"},
                                                "test": {"name": "metrics"}}})
  report = {"split": "test", "subsets": {"a": {"label/accuracy": 0.5}}}
  monkeypatch.setattr(sweep.evaluate, "evaluate_checkpoint", lambda *a, **k: pytest.fail("re-ran"))
  found = sweep._evaluation_reports(config, str(tmp_path), {"step": 7, "subsets": report},
                                    {"robustness": False, "modality_subsets": True})
  assert found == {"modality_subsets": report}


def test_a_probe_on_an_encoders_features_is_a_column(tmp_path):
  config = ml_collections.ConfigDict({
      "model": {"encoders": {"a": {}, "b": {}}},
      "evals": {"probe_a": {"name": "linear_probe", "features": "a"},
                "fused": {"name": "linear_probe", "features": "fused"},
                "probe_b": {"name": "linear_probe", "features": "b"}}})
  results = {"probe_a": {"accuracy": 0.7}, "fused": {"accuracy": 0.9}, "probe_b": {"mse": 0.2}}
  assert sweep.imbalance_columns(config, str(tmp_path), results) == {"probe/a": 0.7,
                                                                     "probe/b": 0.2}


def test_a_second_run_trains_nothing_and_a_half_finished_cell_resumes(swept, monkeypatch):
  config, workdir, rows = swept
  calls = []
  original = sweep.loop.train_and_evaluate
  monkeypatch.setattr(sweep.loop, "train_and_evaluate",
                      lambda c, w: calls.append(w) or original(c, w))
  unfinished = os.path.join(workdir, "cells", "config_arg=synergy_concat,seed=1")
  os.remove(os.path.join(unfinished, "results.json"))   # its checkpoint is still there
  again = sweep.run(config, workdir)
  assert calls == [unfinished]
  # The resumed cell ends where it had (it trains no step, so it has no train speed).
  metrics = lambda table: [{k: r[k] for k in ("config_arg", "seed", *config.metrics)}
                           for r in table]
  assert metrics(again) == metrics(rows) and again[1]["train_samples_per_second"] is None


def test_cells_trained_one_at_a_time_then_summarized_equal_the_whole_sweep(swept, tmp_path):
  """The cluster mode: array tasks train cells by index (here three copied from the whole sweep,
  as if other tasks had run them, and cell 1 trained now); --summarize refuses while one is
  missing, then writes the whole sweep's summaries."""
  config, workdir, rows = swept
  cluster = str(tmp_path / "cluster")
  names = [sweep.cell_name(cell) for cell in sweep.cells(config)]
  assert sweep.list_cells(config, cluster) == [f"{k}\ttodo\t{name}" for k, name in enumerate(names)]
  for k in (0, 2, 3):
    shutil.copytree(os.path.join(workdir, "cells", names[k]),
                    os.path.join(cluster, "cells", names[k]))
  with pytest.raises(ConfigError, match=r"1 of the sweep's 4 cells have no results yet \(cells "
                     r"1\); train them first"):
    sweep.summarize_cells(config, cluster)
  assert sweep.train_cell(config, cluster, 1)
  assert sweep.list_cells(config, cluster)[1] == f"1\tdone\t{names[1]}"
  summarized = sweep.summarize_cells(config, cluster)
  metrics = lambda table: [{k: r[k] for k in ("config_arg", "seed", *config.metrics)}
                           for r in table]
  assert metrics(summarized) == metrics(rows)
  assert os.path.exists(os.path.join(cluster, "summary.md"))
  with pytest.raises(ConfigError, match=r"--cell 4: the sweep has cells 0 to 3"):
    sweep.train_cell(config, cluster, 4)


def test_paper_numbers_appear_beside_ours_with_the_difference(swept, tmp_path, monkeypatch):
  config, workdir, rows = swept
  reference = {"results": [{"dataset": "interactions", "method": "synergy,low_rank",
                            "metric": "test/accuracy", "value": 0.9, "reported": 90.0,
                            "source": "a paper", "table": "Table 2", "row": "LMF",
                            "verified": True, "convention": "c", "paper_method": "LMF"}]}
  path = tmp_path / "reference.json"
  path.write_text(json.dumps(reference))
  monkeypatch.setattr(sweep, "REFERENCE_FILE", str(path))
  sweep.write_summaries(config, rows, str(tmp_path))
  ours = statistics.mean(r["test/accuracy"] for r in rows if r["config_arg"] == "synergy,low_rank")
  markdown = (tmp_path / "summary.md").read_text()
  assert f"(paper 0.9000, Δ {ours - 0.9:+.4f})" in markdown
  assert "- synergy,low_rank test/accuracy: Table 2, row LMF: a paper" in markdown
  assert "paper" not in markdown.split("synergy,concat")[1].split("\n")[0]


def test_a_sweep_field_that_does_not_exist_is_named_before_training(tmp_path):
  config = tiny_sweep(str(tmp_path))
  config.fixed.optimizer = ml_collections.ConfigDict({"learning_rat": 0.1})
  with pytest.raises(ConfigError, match="sweep field 'optimizer.learning_rat': config.optimizer "
                     "has no field 'learning_rat'"):
    sweep.run(config, str(tmp_path / "sweep"))
  assert not os.path.exists(tmp_path / "sweep" / "cells")


def test_the_reference_results_are_data_with_a_source_and_a_convention():
  """Each paper number cites the paper (full citation, never an issue thread that quoted it) and
  the table and row that print it; a number not yet checked against the paper's text says so,
  with no table or row guessed for it."""
  rows = json.load(open(sweep.REFERENCE_FILE))["results"]
  assert len(rows) >= 20
  for row in rows:
    assert set(row) == {"dataset", "method", "metric", "value", "reported", "source", "table",
                        "row", "verified", "convention", "paper_method"}, row
    split, task, metric = row["metric"].split("/")
    assert split == "test" and row["source"] and row["convention"]
    assert "issue" not in row["source"].lower() and "arXiv:" in row["source"], row
    assert isinstance(row["verified"], bool), row
    if row["verified"]:
      assert row["table"].startswith("Table ") and row["table"][6:].isdigit(), row
      assert isinstance(row["row"], str) and row["row"].strip(), row
      assert "not verified" not in row["source"].lower(), row
    else:
      assert row["table"] is None and row["row"] is None, row
      assert "not verified" in row["source"].lower(), row
    scale = 1.0 if metric in ("mae", "pearson") else 100.0
    assert row["value"] == pytest.approx(row["reported"] / scale)
  mm_imdb = {(r["method"], r["metric"]): r["reported"] for r in rows if r["dataset"] == "mm_imdb"}
  assert mm_imdb[("low_rank", "test/genres/micro_f1")] == 59.2
  assert mm_imdb[("text", "test/genres/macro_f1")] == 45.59
  # LMF paper (arXiv:1806.00064) Table 2, CMU-MOSI columns MAE, Corr, Acc-2, F1, Acc-7.
  table_2 = {(r["row"], r["metric"].split("/")[-1]): r["reported"] for r in rows
             if r["verified"] and r["table"] == "Table 2" and "1806.00064" in r["source"]}
  assert table_2 == {(row, metric): reported for row, numbers in
                     {"TFN": (0.970, 0.633, 73.9, 73.4, 32.1),
                      "LMF": (0.912, 0.668, 76.4, 75.7, 32.8)}.items()
                     for metric, reported in zip(("mae", "pearson", "acc2_nonzero", "f1_nonzero",
                                                  "acc7"), numbers)}


@pytest.mark.parametrize("name", sorted(f[:-3] for f in os.listdir(
    os.path.join(REPO, "experiments", "sweeps")) if f.endswith(".py")))
def test_every_committed_sweep_builds_each_cells_config(name):
  """Every cell's config builds (no field misnamed), and every paper number a sweep names is
  one of its methods and metrics (bug caught: a reference method spelt unlike the config arg,
  which would silently show no paper column)."""
  from mmjax.train.defaults import load_config
  config = load_config(os.path.join(REPO, "experiments", "sweeps", f"{name}.py"))
  grid = sweep.cells(config)
  assert len({sweep.cell_name(cell) for cell in grid}) == len(grid)
  for cell in grid:
    sweep.cell_config(config, cell)
  methods = {sweep.method_of(cell, list(checks.field_paths(config.axes))) for cell in grid}
  for row in sweep.reference_rows(config.reference):
    if row["method"] != "mult":   # MulT on MOSI needs a sequence passthrough encoder (not yet)
      assert row["method"] in methods and row["metric"] in config.metrics, row


def test_a_metric_the_results_lack_is_named_with_the_ones_they_have(swept, tmp_path):
  config, workdir, _ = swept
  config = ml_collections.ConfigDict(config.to_dict())
  config.metrics = ("test/acuracy",)
  with pytest.raises(ConfigError, match=r"sweep metric 'test/acuracy' is not in results.json; "
                     r"its metrics are .*test/accuracy"):
    sweep.run(config, workdir)


@pytest.fixture(scope="module")
def swept_with_curve_and_robustness(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("interactions/synergy", directory)
  config = tiny_sweep(directory)
  config.axes.config_arg = ("synergy,low_rank",)
  config.axes.dataset = ml_collections.ConfigDict({"train_examples": (1024, 256)})
  config.fixed.total_steps = 10
  config.fixed.checkpoint_every_steps = 10
  config.curve = "dataset.train_examples"
  config.robustness = True
  workdir = str(tmp_path_factory.mktemp("sweep"))
  return config, workdir, sweep.run(config, workdir)


def test_a_curve_axis_gives_one_line_per_method_of_the_other_axes(swept_with_curve_and_robustness):
  """Bug caught: grouping the lines by every axis (the curve's too) gives one point per line."""
  config, workdir, rows = swept_with_curve_and_robustness
  summary = sweep.summarize(config, rows)
  lines = sweep.curve_lines(summary, "test/accuracy", "dataset.train_examples")
  assert list(lines) == ["synergy,low_rank"]
  points = lines["synergy,low_rank"]
  assert [x for x, _, _ in points] == [256, 1024]
  for x, mean, std in points:
    seeds = [r["test/accuracy"] for r in rows if r["dataset.train_examples"] == x]
    assert (mean, std) == pytest.approx((statistics.mean(seeds), statistics.stdev(seeds)))
  assert os.path.getsize(os.path.join(workdir, "summary.png")) > 0


def test_robustness_columns_come_from_each_cells_evaluation_and_are_not_recomputed(
    swept_with_curve_and_robustness, monkeypatch):
  config, workdir, rows = swept_with_curve_and_robustness
  for row in rows:
    cell = {axis: row[axis] for axis in checks.field_paths(config.axes)}
    report = json.load(open(os.path.join(workdir, "cells", sweep.cell_name(cell),
                                         "eval_results.json")))["robustness"]
    assert set(report["missing"]) == {"a", "b"}
    assert row["missing/a"] == report["missing"]["a"]["label/accuracy"]
    assert row["area/b/gaussian_noise"] == report["area"]["b"]["gaussian_noise"]["label/accuracy"]
  summary = sweep.summarize(config, rows)
  expected = statistics.mean(r["missing/a"] for r in rows if r["dataset.train_examples"] == 256)
  record = next(r for r in summary if r["axes"]["dataset.train_examples"] == 256)
  assert record["robustness"]["missing/a"] == pytest.approx(expected)
  markdown = open(os.path.join(workdir, "summary.md")).read()
  assert "| method | missing/a | missing/b | area/a/gaussian_noise |" in markdown
  assert f"| {record['method']} | {expected:.4f} |" in markdown
  curves = sweep._mean_robustness_curves(config, rows, workdir, record["method"])
  per_seed = [json.load(open(os.path.join(workdir, "cells", sweep.cell_name(
      {axis: row[axis] for axis in checks.field_paths(config.axes)}), "eval_results.json")))
      ["robustness"]["curves"]["b"]["gaussian_noise"]["label/accuracy"]
      for row in rows if row["dataset.train_examples"] == 256]
  assert len(per_seed) == 2 and curves["metric"] == "label/accuracy"
  np.testing.assert_allclose(curves["b/gaussian_noise"], np.mean(per_seed, axis=0))
  monkeypatch.setattr(sweep.evaluate, "evaluate_checkpoint", lambda *a, **k: pytest.fail("re-ran"))
  assert sweep.run(config, workdir) == rows


def test_sweep_config_fixes_the_steps_and_offers_the_data_folders():
  config = sweep.sweep_config("experiment.py", {"model": {"fusion": {"rank": (1, 2)}},
                                                "seed": (0, 1)}, ("test/accuracy",), steps=7,
                              manual_dir=True, curve="model.fusion.rank")
  assert checks.field_paths(config.axes) == {"model.fusion.rank": (1, 2), "seed": (0, 1)}
  assert (config.fixed.total_steps, config.fixed.checkpoint_every_steps) == (7, 7)
  assert config.evaluate_at_end_only
  config.config_file = SEED_CONFIG
  cell = sweep.cell_config(config, {"seed": 0})
  assert [spec.every_steps for spec in cell.evals.values()] == [0, 0]
  assert config.fixed.dataset.data_dir is None and config.fixed.dataset.manual_dir is None
  config.fixed.dataset.manual_dir = "/data"   # a typed placeholder, set from the command line
  assert (config.curve, config.robustness, config.reference) == ("model.fusion.rank", False, "")
  plain = sweep.sweep_config("experiment.py", {"seed": (0,)}, ("test/accuracy",))
  assert set(plain.fixed) == {"dataset"} and set(plain.fixed.dataset) == {"data_dir"}


def test_robustness_columns_do_not_depend_on_the_reports_key_order():
  """A cell evaluated now and one read back from eval_results.json (written with sorted keys)
  give the same columns in the same order (bug caught: summary.csv columns that change order
  between a fresh sweep and a resumed one)."""
  fresh = {"clean": {"shape/accuracy": 0.9, "label/accuracy": 0.8},
           "missing": {"text": {"label/accuracy": 0.3, "shape/accuracy": 0.2},
                       "image": {"label/accuracy": 0.4, "shape/accuracy": 0.1}},
           "area": {"text": {"word_drop": {"label/accuracy": 0.6, "shape/accuracy": 0.5},
                             "typo": {"label/accuracy": 0.7, "shape/accuracy": 0.4}}}}
  read_back = json.loads(json.dumps(fresh, sort_keys=True))
  columns = sweep.robustness_columns(fresh)
  assert list(columns.items()) == list(sweep.robustness_columns(read_back).items())
  assert columns == {"missing/image": 0.4, "missing/text": 0.3, "area/text/typo": 0.7,
                     "area/text/word_drop": 0.6}


def test_methods_with_different_modalities_share_one_table_with_gaps(tmp_path):
  """A unimodal method and a fusion in one robustness sweep (AV-MNIST's): the CSV and the table
  hold the union of the columns, n/a where a method lacks a modality, and the plot draws
  (bugs caught: columns taken from the first row or method only, a crash on a missing curve)."""
  config = sweep.sweep_config("experiment.py", {"config_arg": ("image", "concat"), "seed": (0,)},
                              ("test/accuracy",), robustness=True)
  report = lambda modalities: {
      "levels": [0.0, 1.0], "clean": {"label/accuracy": 0.9},
      "missing": {m: {"label/accuracy": 0.1} for m in modalities},
      "curves": {m: {"blur": {"label/accuracy": [0.9, 0.5]}} for m in modalities},
      "area": {m: {"blur": {"label/accuracy": 0.7}} for m in modalities}}
  rows = []
  for arg, modalities in (("image", ["image"]), ("concat", ["audio", "image"])):
    cell = {"config_arg": arg, "seed": 0}
    os.makedirs(tmp_path / "cells" / sweep.cell_name(cell))
    (tmp_path / "cells" / sweep.cell_name(cell) / "eval_results.json").write_text(
        json.dumps({"step": 1, "robustness": report(modalities)}))
    rows.append({**cell, "test/accuracy": 0.9, "parameters": 10,
                 "train_flops_per_example": 1.0, "train_samples_per_second": 1.0,
                 **sweep.robustness_columns(report(modalities))})
  sweep.write_summaries(config, rows, str(tmp_path))
  with open(tmp_path / "summary.csv") as file:
    written = list(csv.DictReader(file))
  assert written[0]["missing/audio"] == "" and written[1]["missing/audio"] == "0.1"
  table = (tmp_path / "summary.md").read_text().split("Robustness")[1]
  assert "| method | missing/image | area/image/blur | missing/audio | area/audio/blur |" in table
  assert "| image | 0.1000 | 0.7000 | n/a | n/a |" in table
  assert os.path.getsize(tmp_path / "summary.png") > 0


def test_a_curve_that_is_not_an_axis_is_named_before_training(tmp_path):
  config = tiny_sweep(str(tmp_path))
  config.curve = "dataset.train_exmaples"
  with pytest.raises(ConfigError, match="sweep curve 'dataset.train_exmaples' is not an axis; "
                     "its axes are config_arg, seed"):
    sweep.run(config, str(tmp_path / "sweep"))
  assert not os.path.exists(tmp_path / "sweep" / "cells")
