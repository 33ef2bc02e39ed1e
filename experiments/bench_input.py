"""The input pipeline's samples/s beside the samples/s the model's train step consumes, measured
side by side in one run, for each way a split can be held (`config.dataset.cache`).

    python experiments/bench_input.py [--config experiments/configs/seed_text_image.py]
        [--data-dir DIR] [--batches 200] [--steps 30] [--repeats 3]

For each repeat, alternating: the train step's samples/s (the config's model and batch size, jit,
state donated, on real batches already in memory), then the pipeline's samples/s for each cache
(`data.train_batches`: the batch of step s, read and turned into model inputs by grain's threads,
from a fresh reader whose start-up (decoding into RAM or writing the columns) is not timed, and
after a warm-up of 10 batches). Prints one JSON line per measurement and a summary with medians
and the headroom, pipeline / step (the issue's target: at least 10× in every mode).
"""
import argparse
import functools
import json
import os
import statistics
import time

import jax

from mmjax import data
from mmjax.model import model_from_config
from mmjax.tasks import tasks_from_config
from mmjax.train.defaults import load_config
from mmjax.train.state import create_train_state, make_optimizer
from mmjax.train.step import train_step

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(REPO_ROOT, "experiments", "configs",
                                                       "seed_text_image.py"))
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--caches", default=",".join(data.pipeline.CACHES))
  return parser.parse_args(argv)


def pipeline_samples_per_s(builder, cache: str, batch_size: int, batches: int) -> float:
  reader = data.ExampleReader(builder, "train", cache=cache)
  stream = data.train_batches(reader, batch_size, seed=0)
  for _ in range(10):
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return batches * batch_size / (time.perf_counter() - start)


def step_samples_per_s(config, builder, steps: int) -> float:
  reader = data.ExampleReader(builder, "train", cache="memory")
  stream = data.train_batches(reader, config.batch_size, seed=0)
  batches = [next(stream) for _ in range(steps + 1)]
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  state = create_train_state(model_from_config(config.model), tx, batches[0], jax.random.key(0))
  step = jax.jit(functools.partial(train_step, tasks=tasks_from_config(config.tasks),
                                   schedule=schedule), donate_argnums=0)
  state, metrics = step(state, batches[0], jax.random.key(1))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for batch in batches[1:]:
    state, metrics = step(state, batch, jax.random.key(1))
  jax.block_until_ready(metrics)
  return steps * config.batch_size / (time.perf_counter() - start)


def main(argv=None):
  args = parse_args(argv)
  config = load_config(args.config)
  builder = data.prepare(config.dataset.name, args.data_dir or config.dataset.data_dir,
                         config.dataset.manual_dir)
  caches = args.caches.split(",")
  found = {"step": [], **{cache: [] for cache in caches}}
  for repeat in range(args.repeats):
    measured = {"step": step_samples_per_s(config, builder, args.steps)}
    for cache in caches:
      measured[cache] = pipeline_samples_per_s(builder, cache, config.batch_size, args.batches)
    for name, value in measured.items():
      found[name].append(value)
      print(json.dumps({"repeat": repeat, "measure": name, "samples_per_s": round(value, 1)}))
  medians = {name: statistics.median(values) for name, values in found.items()}
  print(json.dumps({
      "dataset": config.dataset.name, "batch_size": config.batch_size,
      "backend": jax.default_backend(), "step_samples_per_s": round(medians["step"], 1),
      **{f"{cache}_samples_per_s": round(medians[cache], 1) for cache in caches},
      **{f"{cache}_headroom": round(medians[cache] / medians["step"], 1) for cache in caches}}))


if __name__ == "__main__":
  main()
