"""Runs the metrics, retrieval and linear_probe evaluators of `every_evaluator_config` on the
latest checkpoint in WORKDIR, on this host's devices with DRIVER, and prints their results as one
JSON line.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python evaluate_on_devices.py DATA_DIR WORKDIR DRIVER
    python evaluate_on_devices.py DATA_DIR WORKDIR DRIVER PROCESS_ID NUM_PROCESSES COORDINATOR

(the second form: one process of a multi-process job on localhost, 2 CPU devices each, gloo).
Run by tests/test_evaluators.py, which compares the results with one device's."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from process_helpers import host_devices_flags  # noqa: E402

if len(sys.argv) > 4:
  os.environ["XLA_FLAGS"] = host_devices_flags(2)
os.environ.setdefault("TQDM_DISABLE", "1")

import ml_collections  # noqa: E402

from mmjax import evaluators  # noqa: E402  (XLA_FLAGS must be set before JAX starts)
from mmjax.train import loop, parallel  # noqa: E402

from config_helpers import every_evaluator_config  # noqa: E402

EVALUATED = ("metrics", "retrieval", "linear_probe")


def main(data_dir, workdir, driver, *process):
  if process:
    process_id, count, coordinator = process
    parallel.initialize_distributed(coordinator, int(count), int(process_id))
  config = every_evaluator_config(data_dir)
  config.parallel.driver = driver
  config.evals = ml_collections.ConfigDict({key: spec for key, spec in config.evals.items()
                                            if key in EVALUATED})
  run = loop.restore_checkpoint(config, workdir)
  results, _ = evaluators.run_all(run.evaluators, run.context(config, workdir), run.state)
  print(json.dumps({"devices": run.driver.mesh.devices.size, **results}))


if __name__ == "__main__":
  main(*sys.argv[1:])
