"""Times the AV-MNIST late-fusion train step, mmjax's against MultiBench's own PyTorch one.

    python experiments/bench_multibench.py [--batch 64] [--steps 50] [--warmup 5]
    python experiments/bench_multibench.py --compare-torch --torch-python PATH --multibench DIR \
        [--repeats 5] [--torch-optimizer adam|sgd]

The mmjax step is `experiments/configs/av_mnist.py:concat` (LeNet(6, 3 layers) on the image,
LeNet(6, 5 layers) on the spectrogram, concatenated, MLP(100) head, 10 classes) with that config's
optimizer (Adam, lr 1e-3, its warm-up/cosine schedule and gradient clipping), mmjax's own
`train_step` jit-compiled with the state donated, on a random batch of the shapes
`mmjax/data/av_mnist.py`'s `model_inputs` gives: image (B, 28, 28, 1), audio (B, 112, 112, 1),
int32 labels. `--compare-torch` also runs `--torch-script` (by default `multibench_peer.py` beside
this file: MultiBench's `avmnist_simple_late_fusion.py` model and the body of its `train()` loop,
imported from the MultiBench checkout `--multibench`) under `--torch-python` (any interpreter with
torch; torch is never an mmjax dependency), alternating the two `--repeats` times so that a change
in machine load hits both, and prints both medians (samples/s) and their ratio mmjax/MultiBench.
The PyTorch side uses Adam (lr 1e-3) by default, like for like; `--torch-optimizer sgd` gives the
example's SGD (lr 0.1, weight decay 1e-4) instead. Nothing is downloaded.

Known model differences (see `LeNetEncoder`): mmjax's LeNet uses GroupNorm (2 groups) where
MultiBench's uses BatchNorm, and does not compute MultiBench's unused per-layer global poolings.
"""
import argparse
import functools
import json
import os
import sys
import time

import jax
import numpy as np

from mmjax.data.av_mnist import AUDIO_SHAPE, IMAGE_SHAPE, NUM_CLASSES
from mmjax.model import model_from_config
from mmjax.tasks import tasks_from_config
from mmjax.train.defaults import load_config
from mmjax.train.state import create_train_state, make_optimizer
from mmjax.train.step import train_step

from peers import alternate, check_peer, run_peer   # beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_FILE = os.path.join(HERE, "configs", "av_mnist.py")
SHAPE_FLAGS = ("batch", "steps", "warmup")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--variant", default="concat", help="of experiments/configs/av_mnist.py")
  parser.add_argument("--compare-torch", action="store_true")
  parser.add_argument("--torch-python", default=sys.executable)
  parser.add_argument("--torch-script", default=os.path.join(HERE, "multibench_peer.py"))
  parser.add_argument("--multibench", default=os.path.join(HERE, "..", "..", "multibench"),
                      help="a MultiBench checkout (github.com/pliang279/MultiBench)")
  parser.add_argument("--torch-optimizer", choices=("adam", "sgd"), default="adam")
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch's threads")
  parser.add_argument("--repeats", type=int, default=5)
  return parser.parse_args(argv)


def av_mnist_batch(batch_size: int, seed: int = 0):
  """A random batch as `mmjax.data.av_mnist.model_inputs` gives it (NHWC, standardised)."""
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(batch_size, *IMAGE_SHAPE)).astype(np.float32),
          "audio": rng.normal(size=(batch_size, *AUDIO_SHAPE)).astype(np.float32),
          "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}


def mmjax_timer(args):
  """`time(steps) -> (seconds, metrics)` of the config's jitted train step, compiled and warmed
  up `args.warmup` steps (built once: every repeat times the same compiled step)."""
  config = load_config(CONFIG_FILE, args.variant)
  model = model_from_config(config.model, config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  batch = jax.device_put(av_mnist_batch(args.batch))
  state = create_train_state(model, tx, batch, jax.random.key(config.seed))
  step = jax.jit(functools.partial(train_step, tasks=tasks_from_config(config.tasks),
                                   schedule=schedule,
                                   shared_weight_decay=config.shared_weight_decay),
                 donate_argnums=0)
  key = jax.random.key(1)
  holder = {"state": state}

  def time_steps(steps):
    start = time.perf_counter()
    for _ in range(steps):
      holder["state"], metrics = step(holder["state"], batch, key)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start, metrics

  time_steps(max(args.warmup, 1))   # the first call compiles
  return time_steps


def bench_mmjax(args, time_steps) -> dict:
  seconds, metrics = time_steps(args.steps)
  return {"impl": "mmjax", "samples_per_s": args.batch * args.steps / seconds,
          "step_ms": 1000 * seconds / args.steps, "loss": float(metrics["values"]["loss"]),
          "backend": jax.default_backend(), "devices": jax.device_count()}


def bench_torch(args) -> dict:
  return run_peer([args.torch_python, args.torch_script, f"--multibench={args.multibench}",
                   f"--optimizer={args.torch_optimizer}", f"--threads={args.threads}"] + [
                       f"--{name}={getattr(args, name)}" for name in SHAPE_FLAGS])


def main(argv=None):
  args = parse_args(argv)
  if not args.compare_torch:
    print(json.dumps(bench_mmjax(args, mmjax_timer(args))))
    return
  check_peer(args.torch_python, (("--torch-script", args.torch_script),
                                 ("--multibench", os.path.join(args.multibench, "unimodals"))))
  time_steps = mmjax_timer(args)
  found = alternate(args.repeats, lambda: bench_mmjax(args, time_steps),
                    lambda: bench_torch(args), "multibench")
  peer = found["first_peer"]
  print(json.dumps({"mmjax_samples_per_s": found["medians"]["mmjax"],
                    "multibench_samples_per_s": found["medians"]["multibench"],
                    "ratio": found["ratio"], "repeats": args.repeats, "runs": found["runs"],
                    "shape": {name: getattr(args, name) for name in SHAPE_FLAGS},
                    "variant": args.variant, "torch_optimizer": peer.get("optimizer"),
                    "torch_threads": peer.get("threads"), "torch": peer.get("torch")}))


if __name__ == "__main__":
  main()
