"""One process of a multi-process run on localhost: 2 CPU devices per process, gloo collectives.

    python train_multiprocess.py PROCESS_ID NUM_PROCESSES COORDINATOR DATA_DIR WORKDIR STOP_AFTER

Trains the small seed model of `train_on_devices.py` for 10 steps, stopping after STOP_AFTER (a
preemption; the next launch resumes). Run by tests/test_parallel.py."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("TQDM_DISABLE", "1")

from mmjax.train import loop, parallel  # noqa: E402  (XLA_FLAGS must be set before JAX starts)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_on_devices import config_for  # noqa: E402

TOTAL_STEPS = 10


def main(process_id, num_processes, coordinator, data_dir, workdir, stop_after):
  parallel.initialize_distributed(coordinator, int(num_processes), int(process_id))
  config = config_for(data_dir, "jit", 0, 1, TOTAL_STEPS)
  config.checkpoint_every_steps = 2
  loop.train_and_evaluate(config, workdir, stop_after_step=int(stop_after))


if __name__ == "__main__":
  main(*sys.argv[1:7])
