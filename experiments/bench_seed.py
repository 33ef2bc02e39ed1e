"""Times training steps of the seed text+image model and prints one JSON line with samples/s.

    python experiments/bench_seed.py --batch 64 --seq 64 --img 64 --channels 256
    python experiments/bench_seed.py --compare-torch [--torch-python PATH]

The step timed is mmjax's own `train_step` (Adam, softmax cross-entropy), jit-compiled with the
state donated, on random data of the given shapes. `--compare-torch` also runs the PyTorch peer
(`--torch-script`, by default ../shared/bench/seed_torch.py beside the project) with the same
flags under `--torch-python` (any interpreter with torch installed; torch is never an mmjax
dependency), alternating the two `--repeats` times, and prints both medians and their ratio.
"""
import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.model import model_from_config
from mmjax.tasks import task_config, tasks_from_config
from mmjax.train.defaults import trainer_config
from mmjax.train.state import create_train_state, make_optimizer
from mmjax.train.step import train_step

from peers import alternate, check_peer, run_peer   # beside this file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE_FLAGS = ("batch", "seq", "img", "channels", "vocab", "classes", "steps", "warmup")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seq", type=int, default=64)
  parser.add_argument("--img", type=int, default=64)
  parser.add_argument("--channels", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=25000)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--unroll", type=int, default=1, help="LSTM time steps per scan iteration")
  parser.add_argument("--chunk", type=int, default=2, help="images per conv backward chunk")
  parser.add_argument("--compare-torch", action="store_true")
  parser.add_argument("--torch-python", default=sys.executable)
  parser.add_argument("--torch-script",
                      default=os.path.join(REPO_ROOT, "..", "shared", "bench", "seed_torch.py"))
  parser.add_argument("--repeats", type=int, default=3)
  return parser.parse_args(argv)


def seed_model_config(args):
  return {
      "encoders": {
          "text": {"name": "lstm", "vocab_size": args.vocab, "embed_dim": 100, "hidden_dim": 256,
                   "num_layers": 2, "unroll": args.unroll},
          "image": {"name": "conv_pool", "channels": args.channels, "chunk_size": args.chunk},
      },
      "fusion": {"name": "concat"},
      "heads": {"label": {"name": "linear", "num_classes": args.classes}},
  }


def bench_mmjax(args) -> dict:
  rng = np.random.default_rng(0)
  batch = {
      "text": jnp.asarray(rng.integers(0, args.vocab, (args.batch, args.seq)), jnp.int32),
      "image": jnp.asarray(rng.normal(size=(args.batch, args.img, args.img, 3)), jnp.float32),
      "label": jnp.asarray(rng.integers(0, args.classes, (args.batch,)), jnp.int32),
  }
  model = model_from_config(seed_model_config(args))
  optimizer = trainer_config("synthetic").optimizer  # Adam, as the PyTorch peer: constant rate
  optimizer.update(learning_rate=1e-3, warmup_steps=0, final_lr_fraction=1.0, grad_clip_norm=0.0)
  tx, schedule = make_optimizer(optimizer, total_steps=args.steps + args.warmup)
  state = create_train_state(model, tx, batch, jax.random.key(0))
  tasks = tasks_from_config({"label": task_config("classification")})
  step = jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule), donate_argnums=0)
  key = jax.random.key(1)
  for _ in range(args.warmup):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  return {"impl": "mmjax", "samples_per_s": args.batch * args.steps / seconds,
          "step_ms": 1000 * seconds / args.steps, "loss": float(metrics["values"]["loss"]),
          "backend": jax.default_backend(), "devices": jax.device_count()}


def bench_torch(args) -> dict:
  return run_peer([args.torch_python, args.torch_script] + [
      f"--{name}={getattr(args, name)}" for name in SHAPE_FLAGS])


def main(argv=None):
  args = parse_args(argv)
  if not args.compare_torch:
    print(json.dumps(bench_mmjax(args)))
    return
  check_peer(args.torch_python, (("--torch-script", args.torch_script),))
  found = alternate(args.repeats, lambda: bench_mmjax(args), lambda: bench_torch(args), "torch")
  print(json.dumps({"mmjax_samples_per_s": found["medians"]["mmjax"],
                    "torch_samples_per_s": found["medians"]["torch"], "ratio": found["ratio"],
                    "repeats": args.repeats, "runs": found["runs"],
                    "shape": {name: getattr(args, name) for name in SHAPE_FLAGS},
                    "torch_threads": found["first_peer"].get("threads")}))


if __name__ == "__main__":
  main()
