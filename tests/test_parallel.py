"""Drivers and hosts: the one train step on 8 devices (jit with named shardings, FSDP-split
parameters, and the per-device shard_map form, with and without gradient accumulation, and with a
SigLIP task (ring layout) and a CLIP task (local layout) whose negatives come from every device
and every micro-batch, under PCGrad) and on 2 processes (with both contrastive tasks: the ring
and the gathers cross the processes) preempted by SIGTERM and resumed ends with the parameters of
one device, on the same global batches.

Tolerance: parameters agree within 1e-5 absolute. Only float32 summation order differs between
the runs (the batch's gradient summed per device, then across devices); after 10 Adam steps at a
learning rate of 2e-3 this leaves differences of order 1e-7 (measured: 6e-8), while a lost or
doubled device's gradient moves parameters by ~1e-3, two orders of magnitude above the bound."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mmjax.train import loop

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
sys.path.insert(0, SCRIPTS)
from train_on_devices import final_params, multiprocess_config  # noqa: E402

from config_helpers import SEED_CONFIG  # noqa: E402
from process_helpers import finish, free_port, host_devices_env  # noqa: E402

TOLERANCE = 1e-5


def run_script(args, timeout=600):
  """stdout of a Python subprocess that sees 8 CPU devices."""
  result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**host_devices_env(8), "TQDM_DISABLE": "1"})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.fixture(scope="module")
def eight_device_report(data_dir, tmp_path_factory):
  output = run_script([os.path.join(SCRIPTS, "train_on_devices.py"), data_dir,
                       str(tmp_path_factory.mktemp("devices"))])
  return json.loads(output.strip().splitlines()[-1])


MANY = ["jit_8", "pmap_8", "jit_8_fsdp_2", "contrastive_jit_8", "contrastive_pmap_8",
        "contrastive_jit_8_accum_2", "contrastive_pmap_8_accum_2"]


@pytest.mark.parametrize("run", MANY)
def test_driver_on_many_devices_ends_with_the_parameters_of_one_device(eight_device_report, run):
  report = eight_device_report
  assert report["devices"] == 8
  assert report[run]["max_abs_diff"] < TOLERANCE, report[run]


def test_fsdp_splits_each_parameter_along_its_largest_divisible_dimension(eight_device_report):
  """With fsdp = 2 the (64, 8) embedding lives as (32, 8) halves: the parameters are split, not
  silently replicated (which would pass the equality test above)."""
  assert eight_device_report["fsdp_2_embedding"] == {"shape": [64, 8], "shard_shape": [32, 8]}


@pytest.mark.parametrize("run", MANY)
def test_metric_sums_over_padded_eval_batches_are_exact_on_many_devices(eight_device_report, run):
  """400-example eval batches over 1,000 and 2,000 examples: the last validation batch is half
  padding, split over the 8 devices."""
  reference = "contrastive_jit_1" if run.startswith("contrastive") else "jit_1"
  one, many = eight_device_report[reference], eight_device_report[run]
  for split in ("validation", "test"):
    assert many[split]["examples"] == one[split]["examples"]
    assert many[split]["label/accuracy"] == one[split]["label/accuracy"]
    assert many[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-6)
    if run.startswith("contrastive"):   # retrieval among each eval batch's global candidates
      for task in ("pair", "pair_clip"):
        assert many[split][f"{task}/a_to_b/R@5"] == one[split][f"{task}/a_to_b/R@5"]


FSDP_PROBE = """
import json, sys
import jax
from mmjax.model import encoder_config
from mmjax.train import loop
from mmjax.train.defaults import load_config
config = load_config(sys.argv[1])
config.dataset.data_dir = sys.argv[2]
config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=16,
                                            num_layers=1)
config.model.encoders.image = encoder_config("conv_pool", channels=8)
config.batch_size, config.parallel.fsdp = 16, 4
state = loop._setup(config).state
print(json.dumps({jax.tree_util.keystr(path): [list(leaf.shape),
                                               list(leaf.sharding.shard_shape(leaf.shape))]
                  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}))
"""


def test_fsdp_splits_a_parameter_along_its_largest_divisible_dimension_not_its_first(data_dir):
  """fsdp = 4 on 8 devices: the LSTM's (8, 64) input projection, whose first dimension is
  divisible by 4 but smaller than its second, lives as (8, 16) blocks; every parameter is split
  along its largest dimension divisible by 4, or replicated when it has none (bug caught:
  splitting the first divisible dimension, which the (64, 8) embedding of the 8-device report
  cannot tell apart)."""
  output = run_script(["-c", FSDP_PROBE, SEED_CONFIG, data_dir])
  shapes = json.loads(output.strip().splitlines()[-1])
  projection = [path for path in shapes if "input_projection" in path and "kernel" in path]
  assert projection and all(shapes[path] == [[8, 64], [8, 16]] for path in projection), shapes
  for path, (shape, shard) in shapes.items():
    divisible = [d for d, size in enumerate(shape) if size % 4 == 0]
    expected = list(shape)
    if divisible:
      largest = max(divisible, key=lambda d: shape[d])
      expected[largest] //= 4
    assert shard == expected, (path, shape, shard)


def test_a_batch_that_does_not_split_over_the_devices_is_one_line():
  probe = ("from mmjax.errors import ConfigError\n"
           "from mmjax.train import checks\n"
           "from mmjax.train.defaults import trainer_config\n"
           "c = trainer_config('mm_shapes'); c.batch_size = 30\n"
           "try:\n  checks.check_step_counts(c)\nexcept ConfigError as e:\n  print(e)\n")
  output = run_script(["-c", probe])
  assert output.strip() == ("config.batch_size=30 does not split into 1 micro-batch(es) over 8 "
                            "devices; use a multiple of 8")


def start_processes(data_dir, workdir, total_steps, count=2):
  """Starts `count` processes of one job on localhost."""
  coordinator = f"127.0.0.1:{free_port()}"
  return [subprocess.Popen(
      [sys.executable, os.path.join(SCRIPTS, "train_multiprocess.py"), str(index), str(count),
       coordinator, data_dir, workdir, str(total_steps)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, "TQDM_DISABLE": "1"}) for index in range(count)]


def test_two_processes_preempted_by_sigterm_resume_to_the_parameters_of_one_process(data_dir,
                                                                                  tmp_path):
  """2 processes × 2 CPU devices (gloo). SIGTERM reaches process 1 only, as a scheduler's notice
  may: JAX's preemption service tells process 0, both stop at the same step, save it together and
  exit 0 (process 0 says where). Resumed for 4 more steps, the job ends with the parameters of
  this process (1 device) on the same global batches (bug caught: handling SIGTERM in Python on
  each process, which stops only process 1 and leaves process 0 waiting in a collective)."""
  workdir = str(tmp_path / "two_processes")
  processes = start_processes(data_dir, workdir, 100_000)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.monotonic() + 300
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
    assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
        [p.poll() for p in processes]
    time.sleep(0.01)
  processes[1].send_signal(signal.SIGTERM)
  first = finish(processes)
  assert "on 4 device(s), 2 process(es)" in first[0]
  stopped = re.search(r"stopped by SIGTERM at step (\d+)", first[0])
  assert stopped and "stopped by" not in first[1], first[0][-2000:]
  step = int(stopped.group(1))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]

  second = finish(start_processes(data_dir, workdir, step + 4))
  assert f"mmjax: resumed from step {step}" in second[0]
  assert "mmjax: final" in second[0] and "mmjax: final" not in second[1]   # process 0 reports

  config = multiprocess_config(data_dir, 1, step + 4)
  reference = str(tmp_path / "one_process")
  results = loop.train_and_evaluate(config, reference)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(final_params(config, workdir)),
                          jax.tree.leaves(final_params(config, reference))):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=jax.tree_util.keystr(path))
  with open(os.path.join(workdir, "results.json")) as file:
    written = json.load(file)
  assert written["test"]["examples"] == results["test"]["examples"] == 2000
  assert written["test"]["label/accuracy"] == results["test"]["label/accuracy"]
