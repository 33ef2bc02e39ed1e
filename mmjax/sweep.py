"""Sweeps: one experiment config trained over a grid of values, summarised over seeds.

A sweep file's `get_config()` returns

    config_file   the experiment config (`experiments/configs/NAME.py`)
    axes          the grid: config fields, nested as in the config, each holding the tuple of
                  its values (`axes.seed = (0, 1, 2)`, `axes.optimizer.learning_rate = ...`), and
                  `axes.config_arg`, the argument of the config file's get_config (e.g.
                  'synergy,low_rank' for interactions.py); the grid is their product, the axes
                  in alphabetical order of their paths
    fixed         config fields, nested as in the config, set in every cell (e.g.
                  `fixed.total_steps`); an unset placeholder (None) or an empty group is left
                  alone, so a sweep file can offer `--config.fixed.dataset.data_dir=DIR`
    metrics       the results.json metrics to summarise, 'split/metric' (e.g. 'test/accuracy')
    reference     the dataset name under which `experiments/reference_results.json` lists paper
                  numbers for these methods ('' for none)
    curve         (optional) a numeric axis, e.g. 'dataset.train_examples' (learning curves) or
                  'model.fusion.rank': summary.png also plots each metric against it, one line
                  per method of the other axes
    robustness    (optional, False) also evaluate each trained cell with `mmjax eval
                  --robustness` (each modality missing, and perturbed at levels 0 to 1): the
                  summaries get each modality's missing score and each perturbation's area
                  under the curve, and summary.png the curves, averaged over seeds
    subsets       (optional, False) also evaluate each trained cell with `mmjax eval --subsets`
                  (the `modality_subsets` evaluator): the summaries get the first task's primary
                  metric with only each subset of the modalities present (`subset/<subset>`),
                  in place of the robustness columns' `missing/<modality>`

Every summary also gets each cell's imbalance diagnostics where it has them: each encoder's mean
share of the encoders' squared gradient norm over the train lines of metrics.jsonl
(`grad_share/<modality>`), and the score of each `linear_probe` evaluator on an encoder's
features in results.json (`probe/<modality>`).

`mmjax sweep --config SWEEP.py --workdir DIR` trains each cell in `DIR/cells/<cell>` with the
normal trainer: a cell whose results.json exists is skipped, a half-finished one resumes from its
checkpoint, so the sweep itself resumes. On a cluster the scheduler runs the cells instead:
`--list` prints them, one line each with its index K (from 0) and whether it is done; `--cell K`
trains cell K only (a SLURM array task: `experiments/launch/sweep_array.sbatch`); `--summarize`
writes the summaries once every cell has finished. The whole sweep then writes
`DIR/summary.csv` (one row per cell),
`DIR/summary.md` (per method, i.e. per combination of the axes other than 'seed': mean ± std
over seeds, their number, the complexity columns, and paper numbers beside ours with the
difference where they exist) and `DIR/summary.png` (each metric per method with ±std error bars,
against the parameter count, and against the curve axis; the robustness curves).
"""
import csv
import itertools
import json
import math
import os
import re
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

import ml_collections

from mmjax import evaluate, modalities, robustness
from mmjax.errors import ConfigError
from mmjax.train import checks, loop
from mmjax.train.defaults import load_config

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "experiments", "reference_results.json")
COMPLEXITY = ("parameters", "train_flops_per_example", "train_samples_per_second")
MODALITY_COLUMNS = ("subset/", "grad_share/", "probe/")


def sweep_config(config_file: str, axes: Mapping[str, Any], metrics: Sequence[str], *,
                 steps: Optional[int] = None, reference: str = "", curve: str = "",
                 robustness: bool = False, subsets: bool = False,
                 manual_dir: bool = False) -> ml_collections.ConfigDict:
  """A sweep file's config (the fields above; `axes` nested dicts). `steps` fixes total_steps,
  with one checkpoint and one run of the evaluators (every `every_steps` set to 0) at the end.
  It offers `fixed.dataset.data_dir`, and with `manual_dir` (a dataset built from its original
  files) `fixed.dataset.manual_dir`, as unset placeholders to give on the command line."""
  fixed = ml_collections.ConfigDict()
  if steps is not None:
    fixed.total_steps = fixed.checkpoint_every_steps = steps
  fixed.dataset = ml_collections.ConfigDict()
  fixed.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  if manual_dir:
    fixed.dataset.manual_dir = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict({
      "config_file": config_file, "axes": axes, "fixed": fixed, "metrics": tuple(metrics),
      "reference": reference, "curve": curve, "robustness": robustness, "subsets": subsets,
      "evaluate_at_end_only": steps is not None})


def cells(sweep: Mapping[str, Any]) -> List[Dict[str, Any]]:
  """Every cell of the grid, `{axis path: value}`."""
  axes = checks.field_paths(sweep["axes"])
  return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def cell_name(cell: Mapping[str, Any]) -> str:
  """A folder name for a cell: `axis=value` pairs, unsafe characters replaced."""
  return ",".join(re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"{axis}={value}")
                  for axis, value in cell.items())


def _set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, leaf = path.split(".")
  node = config
  for depth, key in enumerate([*parents, leaf]):
    if not hasattr(node, "keys") or key not in node:
      where = ".".join(["config", *parents[:depth]])
      raise ConfigError(f"sweep field {path!r}: {where} has no field {key!r}")
    if depth < len(parents):
      node = node[key]
  try:
    node[leaf] = value
  except TypeError as error:
    raise ConfigError(f"sweep field {path!r}: {' '.join(str(error).split())}") from error


def cell_config(sweep: Mapping[str, Any], cell: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The experiment config of `cell`: the config file (with the cell's `config_arg`), the sweep's
  fixed fields, then the cell's fields; a path that names no field is a ConfigError."""
  config = load_config(sweep["config_file"], cell.get("config_arg"))
  fixed = checks.field_paths(sweep.get("fixed", ml_collections.ConfigDict()))
  for path, value in fixed.items():
    if value is not None and value != {}:   # an unset placeholder or an empty group
      _set_field(config, path, value)
  for path, value in cell.items():
    if path != "config_arg":
      _set_field(config, path, value)
  if sweep.get("evaluate_at_end_only", False):
    for spec in config.evals.values():
      spec.every_steps = 0
  return config


def checked_cells(sweep: Mapping[str, Any]) -> List[Dict[str, Any]]:
  """`cells(sweep)`, after building every cell's config (a bad field is a ConfigError before any
  training) and checking the curve axis."""
  grid = cells(sweep)
  for cell in grid:
    cell_config(sweep, cell)
  axes = checks.field_paths(sweep["axes"])
  if sweep.get("curve", "") and sweep["curve"] not in axes:
    raise ConfigError(f"sweep curve {sweep['curve']!r} is not an axis; its axes are "
                      f"{', '.join(axes)}")
  return grid


def cell_directory(workdir: str, cell: Mapping[str, Any]) -> str:
  return os.path.join(workdir, "cells", cell_name(cell))


def is_finished(workdir: str, cell: Mapping[str, Any]) -> bool:
  return os.path.exists(os.path.join(cell_directory(workdir, cell), "results.json"))


def train_cell(sweep: Mapping[str, Any], workdir: str, index: int,
               grid: Optional[Sequence[Mapping[str, Any]]] = None) -> bool:
  """Trains cell `index` (from 0) of `grid` (`checked_cells(sweep)` unless given) unless it is
  finished; False when a signal stopped it (its checkpoint saved: the same command resumes
  it)."""
  grid = checked_cells(sweep) if grid is None else grid
  if not 0 <= index < len(grid):
    raise ConfigError(f"--cell {index}: the sweep has cells 0 to {len(grid) - 1} (mmjax sweep "
                      "--list prints them)")
  cell = grid[index]
  if is_finished(workdir, cell):
    return True
  print(f"mmjax sweep: cell {index} ({index + 1} of {len(grid)}): {cell_name(cell)}")
  if not loop.train_and_evaluate(cell_config(sweep, cell), cell_directory(workdir, cell)):
    print("mmjax sweep: stopped; run the same command to resume")
    return False
  return True


def list_cells(sweep: Mapping[str, Any], workdir: str) -> List[str]:
  """One line per cell: its index, whether it is done, its name."""
  return [f"{index}\t{'done' if is_finished(workdir, cell) else 'todo'}\t{cell_name(cell)}"
          for index, cell in enumerate(checked_cells(sweep))]


def summarize_cells(sweep: Mapping[str, Any], workdir: str) -> List[Dict[str, Any]]:
  """The rows of summary.csv from every cell's results (robustness columns evaluated where the
  sweep asks for them), after writing the summaries; a ConfigError naming the unfinished cells
  when some are."""
  grid = checked_cells(sweep)
  unfinished = [index for index, cell in enumerate(grid) if not is_finished(workdir, cell)]
  if unfinished:
    raise ConfigError(f"{len(unfinished)} of the sweep's {len(grid)} cells have no results yet "
                      f"(cells {', '.join(map(str, unfinished[:10]))}"
                      f"{', ...' if len(unfinished) > 10 else ''}); train them first (mmjax "
                      "sweep --cell K, or without --summarize)")
  rows = [_cell_row(sweep, workdir, cell) for cell in grid]
  write_summaries(sweep, rows, workdir)
  return rows


def _cell_row(sweep: Mapping[str, Any], workdir: str, cell: Mapping[str, Any]) -> Dict[str, Any]:
  directory = cell_directory(workdir, cell)
  with open(os.path.join(directory, "results.json")) as file:
    results = json.load(file)
  row = _row(cell, results, sweep["metrics"])
  config = cell_config(sweep, cell)
  wanted = {"robustness": sweep.get("robustness", False),
            "modality_subsets": sweep.get("subsets", False)}
  if any(wanted.values()):
    reports = _evaluation_reports(config, directory, results, wanted)
    if wanted["robustness"]:
      row.update(robustness_columns(reports["robustness"],
                                    missing=not wanted["modality_subsets"]))
    if wanted["modality_subsets"]:
      row.update(subset_columns(reports["modality_subsets"]))
  row.update(imbalance_columns(config, directory, results))
  return row


def run(sweep: Mapping[str, Any], workdir: str) -> List[Dict[str, Any]]:
  """Trains every unfinished cell, then writes the summaries; returns the rows of summary.csv (a
  run stopped by SIGTERM or SIGINT returns the rows so far, without summaries)."""
  grid = checked_cells(sweep)
  rows = []
  for index, cell in enumerate(grid):
    if not train_cell(sweep, workdir, index, grid):
      return rows
    rows.append(_cell_row(sweep, workdir, cell))
  write_summaries(sweep, rows, workdir)
  return rows


def _evaluation_reports(config: ml_collections.ConfigDict, directory: str,
                        results: Mapping[str, Any], wanted: Mapping[str, bool]) -> Dict[str, Any]:
  """`{"robustness": report, "modality_subsets": report}` (the evaluators `wanted`, by name) of
  the cell's final checkpoint: from its results.json where the cell's config has such an
  evaluator, else from its eval_results.json when that holds them for the final step, else
  evaluated now."""
  names = [name for name, wanted_ in wanted.items() if wanted_]
  step = results["step"]

  def by_name(found: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    keys = {name: next((k for k, spec in config.evals.items() if spec.name == name), name)
            for name in names}   # an evaluator `mmjax eval` adds is keyed by its name
    if found.get("step") == step and all(keys[name] in found for name in names):
      return {name: found[keys[name]] for name in names}
    return None

  reports = by_name(results)
  path = os.path.join(directory, "eval_results.json")
  if reports is None and os.path.exists(path):
    with open(path) as file:
      reports = by_name(json.load(file))
  if reports is None:
    reports = by_name(evaluate.evaluate_checkpoint(
        config, directory, step, robustness=wanted["robustness"],
        subsets=wanted["modality_subsets"]))
  return reports


def robustness_columns(report: Mapping[str, Any], missing: bool = True) -> Dict[str, float]:
  """The primary metric of the first task by name with each modality missing
  (`missing/<modality>`, unless not `missing`) and the area under each perturbation's curve
  (`area/<modality>/<perturbation>`)."""
  metric = robustness.headline_metric(report)
  columns = ({f"missing/{m}": report["missing"][m][metric] for m in sorted(report["missing"])}
             if missing else {})
  for modality in sorted(report["area"]):   # sorted: as read back from eval_results.json
    areas = report["area"][modality]
    columns.update({f"area/{modality}/{name}": areas[name][metric] for name in sorted(areas)})
  return columns


def subset_columns(report: Mapping[str, Any]) -> Dict[str, float]:
  """The first task's (by name) primary metric with only each subset present
  (`subset/<subset>`), the whole set first (`modalities.subsets`' order, whatever the report's:
  eval_results.json sorts its keys)."""
  found = report["subsets"]
  metric = min(next(iter(found.values())))
  whole = max(found, key=lambda name: name.count("+")).split("+")
  return {f"subset/{name}": found[name][metric]
          for name in map(modalities.subset_name, modalities.subsets(whole)) if name in found}


def imbalance_columns(config: ml_collections.ConfigDict, directory: str,
                      results: Mapping[str, Any]) -> Dict[str, float]:
  """`grad_share/<m>`: encoder m's share of the encoders' squared gradient norm, the mean over
  the run's train lines; `probe/<m>`: the score of a `linear_probe` evaluator on encoder m's
  features (its accuracy, or its mse for regression)."""
  columns: Dict[str, float] = {}
  path = os.path.join(directory, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as file:
      lines = [json.loads(line) for line in file]
    shares: Dict[str, List[float]] = {}
    for line in lines:
      if line["split"] == "train":
        for key, value in line.items():
          if key.startswith("grad_share/"):
            shares.setdefault(key, []).append(value)
    columns.update({key: statistics.mean(values) for key, values in sorted(shares.items())})
  for key, spec in config.evals.items():
    if spec.name == "linear_probe" and spec.features in config.model.encoders and key in results:
      found = results[key]
      columns[f"probe/{spec.features}"] = found.get("accuracy", found.get("mse"))
  return columns


def _row(cell: Mapping[str, Any], results: Mapping[str, Any],
         metrics: Sequence[str]) -> Dict[str, Any]:
  row = dict(cell)
  for metric in metrics:
    split, name = metric.split("/", 1)
    if name not in results.get(split, {}):
      known = [f"{s}/{m}" for s, values in results.items() if s != "complexity"
               and isinstance(values, dict) for m in values]
      raise ConfigError(f"sweep metric {metric!r} is not in results.json; its metrics are "
                        f"{', '.join(known)}")
    row[metric] = results[split][name]
  row.update({key: results.get("complexity", {}).get(key) for key in COMPLEXITY})
  return row


def method_of(row: Mapping[str, Any], axes: Sequence[str]) -> str:
  """The row's method: its values of the axes other than 'seed'."""
  return ",".join(str(row[axis]) for axis in axes if axis != "seed")


def _mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def reference_rows(dataset: str, path: Optional[str] = None) -> List[Dict[str, Any]]:
  """The paper numbers listed for `dataset` in `path` (`experiments/reference_results.json`)."""
  if not dataset:
    return []
  with open(path or REFERENCE_FILE) as file:
    return [row for row in json.load(file)["results"] if row["dataset"] == dataset]


def summarize(sweep: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """One record per method: each metric's mean, std and seed count, the complexity means, and
  the paper value of each metric where the reference file lists one for this method."""
  axes = list(checks.field_paths(sweep["axes"]))
  references = reference_rows(sweep.get("reference", ""))
  methods: Dict[str, List[Mapping[str, Any]]] = {}
  for row in rows:
    methods.setdefault(method_of(row, axes), []).append(row)
  summary = []
  for method, runs in methods.items():
    record: Dict[str, Any] = {"method": method, "seeds": len(runs),
                              "axes": {axis: runs[0][axis] for axis in axes if axis != "seed"}}
    for metric in sweep["metrics"]:
      values = [float(run[metric]) for run in runs]
      record[metric] = {"mean": statistics.mean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "text": _mean_std(values)}
      paper = [r for r in references if r["method"] == method and r["metric"] == metric]
      if paper:
        record[metric]["paper"] = paper[0]["value"]
        record[metric]["source"] = paper[0]["source"]
        record[metric]["table"], record[metric]["row"] = paper[0].get("table"), paper[0].get("row")
    for key in COMPLEXITY:
      known = [float(run[key]) for run in runs if run.get(key) is not None]
      record[key] = statistics.mean(known) if known else None
    record["robustness"] = {key: statistics.mean(float(run[key]) for run in runs)
                            for key in runs[0] if key.startswith(("missing/", "area/"))}
    record["modalities"] = {key: _mean_std([float(run[key]) for run in runs])
                            for key in runs[0] if key.startswith(MODALITY_COLUMNS)}
    summary.append(record)
  return summary


def write_summaries(sweep: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                    workdir: str) -> None:
  """summary.csv (every cell), summary.md (mean ± std per method, paper beside ours) and
  summary.png (needs matplotlib; skipped with a note when it is not installed)."""
  os.makedirs(workdir, exist_ok=True)
  columns = list(dict.fromkeys(key for row in rows for key in row))   # methods may differ in
  with open(os.path.join(workdir, "summary.csv"), "w", newline="") as file:  # modalities
    writer = csv.DictWriter(file, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
  summary = summarize(sweep, rows)
  metrics = list(sweep["metrics"])
  header = ["method", "seeds", *metrics, "parameters", "train FLOPs/example", "train samples/s"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  papers = []
  for record in summary:
    cells_ = [record["method"], str(record["seeds"])]
    for metric in metrics:
      value = record[metric]
      text = value["text"]
      if "paper" in value:
        text += f" (paper {value['paper']:.4f}, Δ {value['mean'] - value['paper']:+.4f})"
        where = (f"{value['table']}, row {value['row']}: " if value.get("table") and value.get("row")
                 else "")
        papers.append(f"- {record['method']} {metric}: {where}{value['source']}")
      cells_.append(text)
    cells_ += [_number(record[key]) for key in COMPLEXITY]
    lines.append("| " + " | ".join(cells_) + " |")
  text = (f"Sweep of `{os.path.relpath(sweep['config_file'])}` over "
          f"{', '.join(checks.field_paths(sweep['axes']))}; mean ± std "
          "over the seeds (sample std).\n\n" + "\n".join(lines) + "\n")
  if papers:
    text += "\nPaper numbers (experiments/reference_results.json):\n" + "\n".join(papers) + "\n"
  text += _modalities_table(summary)
  text += _robustness_table(summary)
  with open(os.path.join(workdir, "summary.md"), "w") as file:
    file.write(text)
  curves = {record["method"]: _mean_robustness_curves(sweep, rows, workdir, record["method"])
            for record in summary} if sweep.get("robustness", False) else {}
  _plot(summary, metrics, sweep.get("curve", ""), curves, os.path.join(workdir, "summary.png"))


def _modalities_table(summary: Sequence[Mapping[str, Any]]) -> str:
  columns = list(dict.fromkeys(key for record in summary for key in record["modalities"]))
  if not columns:
    return ""
  lines = ["| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
  lines += [f"| {record['method']} | " + " | ".join(record["modalities"].get(c, "n/a")
                                                    for c in columns) + " |"
            for record in summary]
  return ("\nModalities, mean ± std over seeds: the first task's (by name) primary metric with "
          "only each subset of the modalities present (`subset/...`, the others absent), each "
          "encoder's share of the encoders' squared gradient norm averaged over training "
          "(`grad_share/...`), and a linear probe's score on each encoder's features "
          "(`probe/...`).\n\n" + "\n".join(lines) + "\n")


def _robustness_table(summary: Sequence[Mapping[str, Any]]) -> str:
  columns = list(dict.fromkeys(key for record in summary for key in record["robustness"]))
  if not columns:
    return ""
  cell = lambda record, c: (f"{record['robustness'][c]:.4f}" if c in record["robustness"]
                            else "n/a")
  lines = ["| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
  lines += [f"| {record['method']} | " + " | ".join(cell(record, c) for c in columns) + " |"
            for record in summary]
  return ("\nRobustness on the split `evaluators.report_split` picks (test where an evaluator "
          "reads it), mean over seeds: the first task's (by name) "
          "primary metric with each modality missing, and the area under each perturbation's "
          "curve (levels 0 to 1, trapezoids; 1.0 would be no loss at a perfect score).\n\n"
          + "\n".join(lines) + "\n")


def _mean_robustness_curves(sweep: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                            workdir: str, method: str) -> Dict[str, Any]:
  """`{"levels": [...], "metric": name, "<modality>/<perturbation>": mean curve over the method's
  seeds}` of the first task's (by name) primary metric, from the cells' eval_results.json."""
  axes = list(checks.field_paths(sweep["axes"]))
  reports = []
  for row in rows:
    if method_of(row, axes) == method:
      cell = {axis: row[axis] for axis in axes}
      with open(os.path.join(workdir, "cells", cell_name(cell), "eval_results.json")) as file:
        reports.append(json.load(file)["robustness"])
  metric = robustness.headline_metric(reports[0])
  curves: Dict[str, Any] = {"levels": reports[0]["levels"], "metric": metric}
  for modality, perturbations in reports[0]["curves"].items():
    for name in perturbations:
      values = [report["curves"][modality][name][metric] for report in reports]
      curves[f"{modality}/{name}"] = [statistics.mean(level) for level in zip(*values)]
  return curves


def _number(value: Optional[float]) -> str:
  if value is None:
    return "n/a"
  return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _plot(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str], curve: str,
          robustness_curves: Mapping[str, Mapping[str, Any]], path: str) -> None:
  """Per metric: a bar per method (± std), against parameters and, with a curve axis, against
  it (one line per method of the other axes); then one panel per robustness curve."""
  try:
    import matplotlib   # the `bench` extra
  except ImportError:
    print("mmjax sweep: matplotlib is not installed (pip install -e '.[bench]'): no summary.png")
    return
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  columns = 3 if curve else 2
  panels = sorted({key for curves in robustness_curves.values() for key in curves}
                  - {"levels", "metric"})
  rows = len(metrics) + math.ceil(len(panels) / columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
  names = [record["method"] for record in summary]
  for row, metric in enumerate(metrics):
    means = [record[metric]["mean"] for record in summary]
    stds = [record[metric]["std"] for record in summary]
    axes[row][0].bar(range(len(names)), means, yerr=stds, capsize=3)
    axes[row][0].set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes[row][0].set(ylabel=metric, title=f"{metric} per method (± std over seeds)")
    counts = [record["parameters"] or 0 for record in summary]
    axes[row][1].errorbar(counts, means, yerr=stds, fmt="o")
    for name, x, y in zip(names, counts, means):
      axes[row][1].annotate(name, (x, y), fontsize=6)
    if min(counts) > 0 and max(counts) >= 10 * min(counts):
      axes[row][1].set_xscale("log")
    axes[row][1].set(xlabel="parameters", ylabel=metric, title=f"{metric} vs parameters")
    if curve:
      _plot_curve(axes[row][2], summary, metric, curve)
  for index, panel in enumerate(panels):
    axis = axes[len(metrics) + index // columns][index % columns]
    for method, curves in robustness_curves.items():
      if panel in curves:   # a method without that modality has no such curve
        axis.plot(curves["levels"], curves[panel], marker="o", label=method)
    axis.set(title=f"robustness: {panel}", xlabel="level", ylabel=curves["metric"])
    axis.legend(fontsize=6)
  for index in range(len(panels), (rows - len(metrics)) * columns):
    axes[len(metrics) + index // columns][index % columns].axis("off")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def curve_lines(summary: Sequence[Mapping[str, Any]], metric: str,
                curve: str) -> Dict[str, List[tuple]]:
  """`{method of the other axes: [(curve value, mean, std), ...] in increasing curve value]}`."""
  lines: Dict[str, List[tuple]] = {}
  for record in summary:
    others = ",".join(str(v) for k, v in record["axes"].items() if k != curve)
    lines.setdefault(others, []).append((record["axes"][curve], record[metric]["mean"],
                                         record[metric]["std"]))
  return {name: sorted(points) for name, points in lines.items()}


def _plot_curve(axis, summary: Sequence[Mapping[str, Any]], metric: str, curve: str) -> None:
  lines = curve_lines(summary, metric, curve)
  for name, points in lines.items():
    x, means, stds = zip(*points)
    axis.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=name)
  values = [x for points in lines.values() for x, _, _ in points]
  if min(values) > 0 and max(values) >= 10 * min(values):
    axis.set_xscale("log")
  axis.set(xlabel=curve, ylabel=metric, title=f"{metric} vs {curve}")
  axis.legend(fontsize=6)
