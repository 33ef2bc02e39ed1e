"""One process of a multi-process run on localhost: 2 CPU devices per process, gloo collectives.

    python train_multiprocess.py PROCESS_ID NUM_PROCESSES COORDINATOR DATA_DIR WORKDIR TOTAL_STEPS

Trains `train_on_devices.multiprocess_config` (the small seed model at a constant learning rate
after warm-up, so that a run's steps do not depend on its length) for TOTAL_STEPS steps.
Run by tests/test_parallel.py, which preempts the first launch with SIGTERM and resumes."""
import os
import sys

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [SCRIPTS, os.path.dirname(SCRIPTS)]
from process_helpers import host_devices_flags  # noqa: E402

os.environ["XLA_FLAGS"] = host_devices_flags(2)
os.environ.setdefault("TQDM_DISABLE", "1")

from mmjax.train import loop, parallel  # noqa: E402  (XLA_FLAGS must be set before JAX starts)

from train_on_devices import multiprocess_config  # noqa: E402



def main(process_id, num_processes, coordinator, data_dir, workdir, total_steps):
  parallel.initialize_distributed(coordinator, int(num_processes), int(process_id))
  loop.train_and_evaluate(multiprocess_config(data_dir, 0, int(total_steps)), workdir)


if __name__ == "__main__":
  main(*sys.argv[1:7])
