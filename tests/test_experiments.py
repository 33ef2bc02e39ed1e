"""The benchmark scripts run end to end at toy sizes (their numbers come from full-size runs)."""
import json
import os
import subprocess
import sys

import pytest

from config_helpers import REPO


def run_script(name, *args):
  result = subprocess.run([sys.executable, os.path.join(REPO, "experiments", name), *args],
                          capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_bench_seed_prints_one_json_line():
  output = run_script("bench_seed.py", "--batch=4", "--seq=5", "--img=8", "--channels=4",
                      "--vocab=50", "--steps=2", "--warmup=1")
  record = json.loads(output.strip())
  assert record["impl"] == "mmjax" and record["samples_per_s"] > 0


def test_bench_multibench_times_the_av_mnist_concat_step_without_torch():
  """The mmjax half of the MultiBench peer benchmark (the PyTorch half needs torch)."""
  output = run_script("bench_multibench.py", "--batch=2", "--steps=1", "--warmup=1")
  record = json.loads(output.strip())
  assert record["impl"] == "mmjax" and record["samples_per_s"] > 0


def test_bench_scaling_runs_both_drivers_and_compiles_the_step_once():
  output = run_script("bench_scaling.py", "--host-devices=2", "--devices=1,2", "--steps=2",
                      "--warmup=1", "--batch=4", "--channels=4", "--hidden=8", "--repeats=1")
  rows = [json.loads(line) for line in output.strip().splitlines()]
  assert [(r["driver"], r["devices"]) for r in rows] == [("jit", 1), ("jit", 2), ("pmap", 1),
                                                         ("pmap", 2)]
  assert all(r["first_step_compiles"] >= 1 and r["recompiles"] == 0 for r in rows)


def test_bench_contrastive_measures_every_layout_and_the_full_matrix_grows_quadratically():
  """Tiny batches (16 and 32 rows per device): every method, a line each; the full matrix's
  temporaries quadruple when the batch doubles, the ring's do not."""
  output = run_script("bench_contrastive.py", "--part=loss", "--batches=128,256",
                      "--losses=siglip", "--dim=8")
  rows = {(r["method"], r["batch"]): r for r in map(json.loads, output.strip().splitlines())}
  assert sorted({method for method, _ in rows}) == ["full", "local", "local/1024", "ring",
                                                    "ring/1024"]
  assert rows[("full", 256)]["growth"] > 1.8
  assert rows[("full", 256)]["temp_mb"] > 4 * rows[("ring", 256)]["temp_mb"]


def test_bench_input_measures_every_cache_beside_the_step(data_dir):
  output = run_script("bench_input.py", f"--data-dir={data_dir}", "--batches=3", "--steps=2",
                      "--repeats=1")
  summary = json.loads(output.strip().splitlines()[-1])
  for cache in ("memory", "columns", "none"):
    assert summary[f"{cache}_samples_per_s"] > 0 and summary[f"{cache}_headroom"] > 0
  assert summary["step_samples_per_s"] > 0


def test_results_page_has_a_section_with_its_command_per_committed_summary(tmp_path):
  """Bugs caught: a sweep with a summary also listed as still to run, or one without left out; a
  command that drops the flags its sweep file's docstring gives (e.g. manual_dir)."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  from write_results import results_page
  summaries, sweeps = tmp_path / "summaries", tmp_path / "sweeps"
  for name, table in (("b_sweep", "| b |"), ("a_sweep", "| a |")):
    os.makedirs(summaries / name)
    (summaries / name / "summary.md").write_text(table + "\n")
  (summaries / "a_sweep" / "NOTES.md").write_text("3 seeds, this CPU.")
  (summaries / "a_sweep" / "summary.png").write_bytes(b"png")
  os.makedirs(summaries / "no_summary")
  os.makedirs(sweeps)
  for name in ("b_sweep", "c_sweep"):
    (sweeps / f"{name}.py").write_text(f'"""{name} docstring: mmjax sweep ..."""\n')
  (sweeps / "a_sweep.py").write_text('"""Needs the files:\n\n'
                                     '    mmjax sweep --config A --workdir W \\\\\n'
                                     '        --config.fixed.dataset.manual_dir=DIR\n\nMore."""\n')
  page = results_page(str(summaries), str(sweeps))
  assert page.index("## a_sweep") < page.index("## b_sweep") and "no_summary" not in page
  assert ("Reproduce with\n\n    mmjax sweep --config A --workdir W \\\n"
          "        --config.fixed.dataset.manual_dir=DIR\n\nthen copy") in page
  assert ("Reproduce with\n\n    mmjax sweep --config experiments/sweeps/b_sweep.py --workdir "
          "runs/b_sweep\n\nthen copy") in page
  assert "3 seeds, this CPU.\n\n| a |" in page and "/a_sweep/summary.png)" in page
  assert "/b_sweep/summary.png" not in page
  pending = page.split("## Sweeps to run where")[1]
  assert "### c_sweep\n\nc_sweep docstring" in pending and "a_sweep" not in pending
  committed = open(os.path.join(REPO, "experiments", "RESULTS.md")).read()
  assert committed == results_page(os.path.join(REPO, "experiments", "results", "sweeps"),
                                   os.path.join(REPO, "experiments", "sweeps"))


def test_bench_lmf_tfn_prints_both_models_and_their_ratio():
  output = run_script("bench_lmf_tfn.py", "--batch=4", "--steps=2", "--repeats=1")
  lines = [json.loads(line) for line in output.strip().splitlines()]
  assert [line.get("model") for line in lines[:2]] == ["low_rank", "tensor"]
  assert lines[2]["lmf_over_tfn_train"] == pytest.approx(
      lines[0]["train_samples_per_s"] / lines[1]["train_samples_per_s"])
