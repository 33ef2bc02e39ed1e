"""The fusion benchmark: every fusion on every `interactions` config, a few seeds each, and the
low-rank vs. tensor fusion training speed.

    python experiments/bench_fusion.py --data-dir /tmp/tfds [--out runs/bench_fusion/fusion_interactions]

writes `OUT.csv` (one row per fusion, config and seed), `OUT_speed.csv` (the LMF vs TFN speed
table), `OUT.md` (mean ± std test accuracy per fusion and config, the fusion's and the whole
model's parameter counts, train samples/s, and the speed table) and `OUT.png` (accuracy per fusion
per config; needs matplotlib, `pip install -e ".[bench]"`). The default OUT is under `runs/`; the
committed results are `experiments/results/fusion_interactions`, updated in place with
`--out experiments/results/fusion_interactions --merge --fusions=CHANGED,...`: `--merge` keeps the
existing rows of the (config, fusion) pairs not re-run, and `--no-speed` reuses `OUT_speed.csv`.

Every model is `experiments/configs/interactions.py:CONFIG,FUSION` (an MLP per modality, or
per-modality tokens for mult and mbt -> fusion -> a linear head), trained with mmjax's own
`train_step`; the head is linear so that what a model can represent across modalities is decided
by its fusion.
"""
import argparse
import csv
import functools
import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmjax import data
from mmjax.data import interactions
from mmjax.fusion import FUSIONS, LowRankFusion, TensorFusion
from mmjax.model import model_from_config
from mmjax.tasks.objective import tasks_from_config
from mmjax.train.defaults import load_config
from mmjax.train.state import make_optimizer, parameter_count, state_initializer
from mmjax.train.step import eval_step, evaluate, train_step

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                           "interactions.py")


def experiment_config(data_config: str, fusion: str, args) -> ml_collections.ConfigDict:
  """`experiments/configs/interactions.py:DATA_CONFIG,FUSION` with this run's sizes."""
  config = load_config(CONFIG_FILE, f"{data_config},{fusion}")
  config.total_steps, config.batch_size = args.steps, args.batch
  config.optimizer.learning_rate = args.learning_rate
  return config


def train_seeds(config, readers, seeds) -> list:
  """Trains one model per seed (compiling the steps once); returns, per seed, the test accuracy,
  the whole model's parameter count and the train samples/s."""
  model = model_from_config(config.model)
  tasks = tasks_from_config(config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  step = jax.jit(functools.partial(train_step, tasks=tasks, schedule=schedule), donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, tasks=tasks))
  init_state = state_initializer(model, tx)
  results = []
  for seed in seeds:
    batches = data.train_batches(readers["train"], config.batch_size, seed=seed)
    first = next(batches)
    init_rng, step_rng = jax.random.split(jax.random.key(seed))
    state = init_state(init_rng, first)
    state, metrics = step(state, first, step_rng)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(config.total_steps - 1):
      state, metrics = step(state, next(batches), step_rng)
    jax.block_until_ready(metrics)
    samples_per_s = (config.total_steps - 1) * config.batch_size / (time.perf_counter() - start)
    test = evaluate(eval_fn, state, data.eval_batches(readers["test"], config.eval_batch_size),
                    tasks)
    results.append({"seed": seed, "accuracy": test["label/accuracy"],
                    "params": parameter_count(state.params), "samples_per_s": samples_per_s})
  return results


def fusion_speed(fusion_module, widths, batch, steps) -> float:
  """Train samples/s of `fusion_module` on random inputs of `widths`, output 1, squared loss."""
  rng = np.random.default_rng(0)
  features = {f"m{i}": jnp.asarray(rng.normal(size=(batch, w)), jnp.float32)
              for i, w in enumerate(widths)}
  target = jnp.asarray(rng.normal(size=(batch, 1)), jnp.float32)
  params = fusion_module.init(jax.random.key(0), features)
  tx = optax.adam(1e-3)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def update(params, opt_state):
    grads = jax.grad(lambda p: jnp.mean((fusion_module.apply(p, features) - target) ** 2))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for _ in range(3):
    params, opt_state = update(params, opt_state)
  jax.block_until_ready(params)
  start = time.perf_counter()
  for _ in range(steps):
    params, opt_state = update(params, opt_state)
  jax.block_until_ready(params)
  return steps * batch / (time.perf_counter() - start)


class FusionThenLinear(nn.Module):
  """`fusion` followed by Dense(output_dim): how TFN maps its tensor to the output."""
  fusion: nn.Module
  output_dim: int = 1

  @nn.compact
  def __call__(self, features):
    return nn.Dense(self.output_dim)(self.fusion(features))


def speed_table(args) -> list:
  """LMF vs TFN train samples/s at the LMF paper's widths and at 128/128/128; output 1, rank 4."""
  rows = []
  for widths in ((32, 32, 64), (128, 128, 128)):
    tensor = fusion_speed(FusionThenLinear(TensorFusion()), widths, args.speed_batch,
                          args.speed_steps)
    low_rank = fusion_speed(LowRankFusion(dim=1, rank=4), widths, args.speed_batch,
                            args.speed_steps)
    rows.append({"widths": "/".join(map(str, widths)), "batch": args.speed_batch,
                 "tensor_samples_per_s": tensor,
                 "low_rank_samples_per_s": low_rank, "ratio": low_rank / tensor})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def parameter_counts(data_config: str, fusion: str, args) -> tuple:
  """(the fusion's, the whole model's) parameter counts, from shapes only."""
  config = experiment_config(data_config, fusion, args)
  batch = interactions.model_inputs({key: np.stack([np.asarray(value)] * 2) for key, value in
                                     interactions.make_example(data_config, 0, 0, 0).items()})
  params = jax.eval_shape(model_from_config(config.model).init, jax.random.key(0), batch)["params"]
  return parameter_count(params.get("fusion", {})), parameter_count(params)


def mean_std(values) -> str:
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def test_set_bayes(reader: data.ExampleReader, config: str) -> float:
  """The Bayes classifier's accuracy on this test set: how often its label equals the noiseless
  rule (the realised label noise makes this differ from the expected 1 − ε + ε/K)."""
  examples = reader.read_examples(np.arange(len(reader)))
  rule = [interactions.clean_label(config, a, b)
          for a, b in zip(examples["bits_a"], examples["bits_b"])]
  return float(np.mean(np.asarray(rule) == examples["label"]))


def write_markdown(path, rows, speeds, fusions, configs, bayes, args) -> None:
  lines = [f"# Fusion benchmark on `interactions` ({args.seeds} seeds, {args.steps} steps of "
           f"batch {args.batch}; test accuracy %, mean ± std)", "",
           "Column headers give each config's Bayes-optimal accuracy: expected / on this test "
           "set (the realised label noise of its 2,000 examples).", "",
           "Parameters: the fusion's own, and the whole model's (two MLP or token encoders, the "
           f"fusion, a linear head) on `{configs[0]}`. Train samples/s as measured in each row's "
           "own run: rows updated with `--merge` come from another session and another machine "
           "load, so compare speeds only within one run.", "",
           "| fusion | " + " | ".join(f"{c} (Bayes {100 * interactions.bayes_accuracy(c):.1f} / "
                                      f"{100 * bayes[c]:.1f})" for c in configs)
           + " | fusion params | model params | train samples/s |",
           "|---" * (len(configs) + 4) + "|"]
  for fusion in fusions:
    cells = [mean_std([float(r["accuracy"]) for r in rows
                       if r["fusion"] == fusion and r["config"] == c]) for c in configs]
    fusion_params, model_params = parameter_counts(configs[0], fusion, args)
    speed = statistics.mean(float(r["samples_per_s"]) for r in rows if r["fusion"] == fusion)
    lines.append(f"| {fusion} | " + " | ".join(cells)
                 + f" | {fusion_params} | {model_params} | {speed:,.0f} |")
  if speeds:
    lines += ["", "## Low-rank (LMF) vs tensor (TFN) fusion, train samples/s, output 1, rank 4, "
              f"batch {speeds[0]['batch']}", "", "| widths | TFN | LMF | LMF / TFN |",
              "|---|---|---|---|"]
    lines += [f"| {s['widths']} | {float(s['tensor_samples_per_s']):,.0f} | "
              f"{float(s['low_rank_samples_per_s']):,.0f} | {float(s['ratio']):.1f}x |"
              for s in speeds]
  lines += ["", f"Command: `python experiments/bench_fusion.py {' '.join(args.argv)}`", ""]
  with open(path, "w") as file:
    file.write("\n".join(lines))


def write_plot(path, rows, fusions, configs) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(12, 4.5))
  width = 0.8 / len(configs)
  for k, config in enumerate(configs):
    means = [statistics.mean(float(r["accuracy"]) for r in rows
                             if r["fusion"] == f and r["config"] == config) for f in fusions]
    axis.bar(np.arange(len(fusions)) + k * width, means, width, label=config)
    axis.axhline(interactions.bayes_accuracy(config), color=f"C{k}", linestyle=":", linewidth=1)
  axis.set_xticks(np.arange(len(fusions)) + 0.4 - width / 2, fusions, rotation=30)
  axis.set_ylabel("test accuracy (dotted: Bayes)")
  axis.set_ylim(0.2, 1.0)
  axis.legend(ncol=len(configs))
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def read_csv(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as file:
    return list(csv.DictReader(file))


def write_csv(path: str, rows: list) -> None:
  with open(path, "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None,
                      help="tfds data dir where the interactions configs are generated "
                           "(default: tfds's own, ~/tensorflow_datasets)")
  parser.add_argument("--out", default="runs/bench_fusion/fusion_interactions",
                      help="output path prefix for .csv, _speed.csv, .md, .png (default under "
                           "runs/, so the committed experiments/results are never overwritten "
                           "by accident)")
  parser.add_argument("--fusions", default=",".join(FUSIONS),
                      help="comma-separated registered fusion names to train (default: all)")
  parser.add_argument("--configs", default=",".join(interactions.NUM_CLASSES),
                      help="comma-separated interactions configs (default: all four)")
  parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per fusion and config")
  parser.add_argument("--steps", type=int, default=1000, help="training steps per model")
  parser.add_argument("--batch", type=int, default=128, help="training batch size")
  parser.add_argument("--learning-rate", type=float, default=3e-3, help="peak learning rate")
  parser.add_argument("--speed-batch", type=int, default=256,
                      help="batch size of the LMF vs TFN speed table")
  parser.add_argument("--speed-steps", type=int, default=10,
                      help="timed steps per entry of the speed table")
  parser.add_argument("--no-speed", action="store_true",
                      help="skip the LMF vs TFN speed table (reuse OUT_speed.csv if it exists)")
  parser.add_argument("--merge", action="store_true",
                      help="keep the rows of OUT.csv whose (config, fusion) is not re-run, and "
                           "summarise every fusion in it")
  args = parser.parse_args(argv)
  args.argv = argv if argv is not None else sys.argv[1:]
  fusions, configs = args.fusions.split(","), args.configs.split(",")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

  if args.no_speed:
    speeds = read_csv(args.out + "_speed.csv")
  else:
    speeds = speed_table(args)
    write_csv(args.out + "_speed.csv", speeds)
  rows, bayes = [], {}
  for config in configs:
    builder = data.prepare(f"interactions/{config}", args.data_dir)
    readers = {split: data.ExampleReader(builder, split, cache="memory")
               for split in ("train", "test")}
    bayes[config] = test_set_bayes(readers["test"], config)
    for fusion in fusions:
      for result in train_seeds(experiment_config(config, fusion, args), readers,
                                range(args.seeds)):
        rows.append({"config": config, "fusion": fusion, **result})
        print(json.dumps(rows[-1]), flush=True)
  if args.merge:
    rerun = {(r["config"], r["fusion"]) for r in rows}
    kept = [r for r in read_csv(args.out + ".csv") if (r["config"], r["fusion"]) not in rerun]
    rows = kept + rows
    fusions = [f for f in FUSIONS if any(r["fusion"] == f for r in rows)]
    configs = [c for c in interactions.NUM_CLASSES if any(r["config"] == c for r in rows)]
    for config in configs:
      if config not in bayes:
        builder = data.prepare(f"interactions/{config}", args.data_dir)
        bayes[config] = test_set_bayes(data.ExampleReader(builder, "test", "memory"), config)
  rows.sort(key=lambda r: (list(interactions.NUM_CLASSES).index(r["config"]),
                           list(FUSIONS).index(r["fusion"]), int(r["seed"])))
  write_csv(args.out + ".csv", rows)
  write_markdown(args.out + ".md", rows, speeds, fusions, configs, bayes, args)
  write_plot(args.out + ".png", rows, fusions, configs)


if __name__ == "__main__":
  main()
