"""Scaling of the one train step over the devices of this host, under both drivers.

    python experiments/bench_scaling.py --host-devices 8              # CPU: 8 virtual devices
    python experiments/bench_scaling.py --devices 1,2,4,8 --mfu       # on a GPU host

For each driver (`jit`, `pmap`) and device count, the seed model (`seed_text_image.py` at this
run's sizes) trains on a fixed global batch; the cases run in turn, `--repeats` rounds, and each
prints one JSON line with the median over rounds of the median step time, samples/s, and the
number of compilations after the first step, which must be 0 (the script exits non-zero
otherwise: a step that recompiles is a bug, not a slowdown). With `--mfu` on a GPU it also reports
the model FLOP utilisation of `transformer_resnet.py` in bfloat16 on one device: FLOPs of the
compiled step from XLA's cost analysis, ÷ the median step time, ÷ the device's peak.

On a CPU host, N virtual devices share the same cores: the numbers show the drivers' overhead,
not a speed-up.
"""
import argparse
import os
import sys


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--host-devices", type=int, default=0,
                      help="split this host's CPU into N virtual devices (sets XLA_FLAGS; 0: no)")
  parser.add_argument("--devices", default="1,2,4,8", help="device counts to run, comma-separated")
  parser.add_argument("--drivers", default="jit,pmap", help="drivers to run, comma-separated")
  parser.add_argument("--batch", type=int, default=64, help="global batch size")
  parser.add_argument("--channels", type=int, default=64, help="conv_pool channels")
  parser.add_argument("--hidden", type=int, default=256, help="LSTM width")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case (compile)")
  parser.add_argument("--repeats", type=int, default=3,
                      help="rounds over all cases, alternating them (the machine's speed drifts)")
  parser.add_argument("--mfu", action="store_true",
                      help="on a GPU: MFU of transformer_resnet.py in bfloat16 on one device")
  parser.add_argument("--mfu-batch", type=int, default=256, help="batch size of the MFU run")
  parser.add_argument("--peak-tflops", type=float, default=0.0,
                      help="the device's dense bf16 peak in TFLOP/s (default: known GPUs)")
  return parser.parse_args(argv)


ARGS = parse_args()
if ARGS.host_devices:  # before JAX starts: the device count is fixed at backend start-up
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={ARGS.host_devices}")

import json  # noqa: E402
import statistics  # noqa: E402

import jax  # noqa: E402

from mmjax.data import mm_shapes  # noqa: E402
from mmjax.model import model_from_config  # noqa: E402
from mmjax.tasks.objective import tasks_from_config  # noqa: E402
from mmjax.train import flops, parallel  # noqa: E402
from mmjax.train.defaults import load_config  # noqa: E402
from mmjax.train.state import init_state, make_optimizer  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}   # dense, SXM
COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **kwargs: COMPILES.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def run_case(config, batch_size: int, steps: int, warmup: int) -> dict:
  """Median step time of `config` under its driver; compilations after the first step."""
  model = model_from_config(config.model)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  batch = mm_shapes.random_batch(batch_size)
  init = lambda rng: init_state(model, tx, rng, batch)
  driver = parallel.make_driver(config.parallel, jax.eval_shape(init, jax.random.key(0)),
                                tasks=tasks_from_config(config.tasks), schedule=schedule)
  state = jax.jit(init, out_shardings=driver.state_sharding)(jax.random.key(0))
  rng = jax.jit(lambda: jax.random.key(1), out_shardings=driver.replicated)()
  global_batch = driver.put_batch(batch)
  compiles_start = len(COMPILES)
  for _ in range(warmup):
    state, metrics = driver.train(state, global_batch, rng)
  jax.block_until_ready(metrics)
  compiles_before = len(COMPILES)
  state, metrics, step_s = flops.median_step_seconds(driver.train, state, global_batch, rng, steps)
  xla_flops = driver.train.lower(state, global_batch, rng).compile().cost_analysis().get(
      "flops", 0.0)
  return {"step_ms": 1000 * step_s, "samples_per_s": batch_size / step_s,
          "first_step_compiles": compiles_before - compiles_start,
          "recompiles": len(COMPILES) - compiles_before, "flops_per_device_step": xla_flops}


def seed_config(args, driver: str, devices: int):
  config = load_config(os.path.join(CONFIGS, "seed_text_image.py"))
  config.model.encoders.text.hidden_dim = args.hidden
  config.model.encoders.image.channels = args.channels
  config.parallel.driver, config.parallel.num_devices = driver, devices
  return config


def main(args) -> int:
  cases = [(driver, devices) for driver in args.drivers.split(",")
           for devices in map(int, args.devices.split(",")) if devices <= jax.device_count()]
  runs = {case: [] for case in cases}
  for _ in range(args.repeats):
    for driver, devices in cases:
      runs[driver, devices].append(
          run_case(seed_config(args, driver, devices), args.batch, args.steps, args.warmup))
  rows = []
  for (driver, devices), results in runs.items():
    median = lambda key: statistics.median(r[key] for r in results)
    rows.append({"driver": driver, "devices": devices, "batch": args.batch,
                 "backend": jax.default_backend(), "repeats": args.repeats,
                 "step_ms": median("step_ms"), "samples_per_s": median("samples_per_s"),
                 "first_step_compiles": min(r["first_step_compiles"] for r in results),
                 "recompiles": max(r["recompiles"] for r in results),
                 "flops_per_device_step": results[0]["flops_per_device_step"]})
    print(json.dumps(rows[-1]), flush=True)
  if args.mfu and jax.default_backend() == "gpu":
    config = load_config(os.path.join(CONFIGS, "transformer_resnet.py"))
    config.model.dtype, config.parallel.num_devices = "bfloat16", 1
    result = run_case(config, args.mfu_batch, args.steps, args.warmup)
    kind = jax.devices()[0].device_kind
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), 0.0)
    mfu = (result["flops_per_device_step"] / (result["step_ms"] / 1000) / (peak * 1e12)
           if peak else None)
    print(json.dumps({"mfu_config": "transformer_resnet.py", "dtype": "bfloat16",
                      "device": kind, "batch": args.mfu_batch, "peak_tflops": peak,
                      "mfu": mfu, **result}), flush=True)
  recompiled = [r for r in rows if r["recompiles"]]
  if recompiled:
    print(f"bench_scaling: the step recompiled after its first call in {recompiled}",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(ARGS))
