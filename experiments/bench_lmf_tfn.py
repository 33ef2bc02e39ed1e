"""Whole-model LMF vs TFN speed on CMU-MOSI-shaped inputs, side by side.

    python experiments/bench_lmf_tfn.py [--batch 32] [--steps 50] [--repeats 5]

Both models are `experiments/configs/mosi.py` (`low_rank` and `tensor`): the three modalities'
LSTMs at the LMF paper's MOSI sizes (text 128, audio 4, vision 16 units), the fusion (LMF rank 4,
output 64; TFN's outer product of the three 1-padded vectors, 129·5·17 = 10,965 features) and the
same regression head, on random batches of MOSI's shapes (50 steps of 300-d text, 5-d audio,
20-d vision). It times mmjax's jitted `train_step` (forward, backward, Adam) and the forward pass
alone, alternating the two models `--repeats` times, and prints one JSON line per model with the
median samples/s, then their ratios. The LMF paper reports LMF 3.3× faster in training and 1.9×
in inference than TFN (its Table 5, on a GPU, with its own implementations of both).
"""
import argparse
import functools
import json
import os
import statistics
import time

import jax
import numpy as np

from mmjax.model import model_from_config
from mmjax.tasks.objective import tasks_from_config
from mmjax.train.defaults import load_config
from mmjax.train.state import create_train_state, make_optimizer
from mmjax.train.step import train_step

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "mosi.py")
WIDTHS = {"text": 300, "audio": 5, "vision": 20}
STEPS = 50


def mosi_batch(batch_size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  batch = {m: rng.normal(size=(batch_size, STEPS, width)).astype(np.float32)
           for m, width in WIDTHS.items()}
  batch.update({f"{m}_mask": np.ones((batch_size, STEPS), bool) for m in WIDTHS})
  batch["label"] = rng.uniform(-3, 3, batch_size).astype(np.float32)
  return batch


def timers(variant: str, batch_size: int):
  """(train(steps) -> seconds, infer(steps) -> seconds), both compiled and warmed up."""
  config = load_config(CONFIG_FILE, variant)
  model = model_from_config(config.model)
  tx, schedule = make_optimizer(config.optimizer, 1000)
  batch = jax.device_put(mosi_batch(batch_size))
  state = create_train_state(model, tx, batch, jax.random.key(0))
  step = jax.jit(functools.partial(train_step, tasks=tasks_from_config(config.tasks),
                                   schedule=schedule), donate_argnums=0)
  forward = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
  rng = jax.random.key(1)
  holder = {"state": step(state, batch, rng)[0]}
  jax.block_until_ready(forward(holder["state"].params, batch))

  def train(steps):
    start = time.perf_counter()
    for _ in range(steps):
      holder["state"], metrics = step(holder["state"], batch, rng)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  def infer(steps):
    start = time.perf_counter()
    for _ in range(steps):
      outputs = forward(holder["state"].params, batch)
    jax.block_until_ready(outputs)
    return time.perf_counter() - start

  return train, infer


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  models = {"low_rank": timers("low_rank", args.batch), "tensor": timers("tensor", args.batch)}
  speeds = {name: {"train": [], "inference": []} for name in models}
  for _ in range(args.repeats):   # alternate, so that a change in machine load hits both
    for name, (train, infer) in models.items():
      speeds[name]["train"].append(args.steps * args.batch / train(args.steps))
      speeds[name]["inference"].append(args.steps * args.batch / infer(args.steps))
  medians = {name: {kind: statistics.median(values) for kind, values in kinds.items()}
             for name, kinds in speeds.items()}
  for name, values in medians.items():
    print(json.dumps({"model": name, "batch": args.batch, "repeats": args.repeats,
                      "train_samples_per_s": values["train"],
                      "inference_samples_per_s": values["inference"]}))
  print(json.dumps({"lmf_over_tfn_train": medians["low_rank"]["train"]
                    / medians["tensor"]["train"],
                    "lmf_over_tfn_inference": medians["low_rank"]["inference"]
                    / medians["tensor"]["inference"]}))


if __name__ == "__main__":
  main()
