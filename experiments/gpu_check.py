"""One command for a lent accelerator: what mmjax does on it, in a few minutes.

    python experiments/gpu_check.py [--out gpu_check.json] [--budget-seconds 420] [--tiny]
        [--data-dir DIR]

Sections, each timed, each a JSON record with `ok` (and `error` when it raised, the check going
on with the next section), written to `--out` and summed up in a table:

- `environment`: JAX's version, backend and devices.
- `mfu`: `transformer_resnet.py` and the seed model (`seed_text_image.py`) in bfloat16 and
  float32 on one device: median step time over `--steps` steps after 2 untimed ones, samples/s,
  the step's model FLOPs (`mmjax/train/flops.py`: matrix products and convolutions, each scan at
  its length) and MFU against the device's peak for that dtype (`flops.PEAK_FLOPS`; null where
  unknown, as on the CPU).
- `conv_pool`: the conv_pool encoder's XLA gradient (what "auto" picks off the CPU) against its
  fused custom-VJP path run on the CPU, outputs and gradients, float32.
- `attention`: `jax.nn.dot_product_attention`'s fused kernel where this backend has one (cuDNN on
  NVIDIA GPUs, bfloat16) against the plain softmax(QKᵀ/√d)V that mmjax's attention computes, with
  a padding mask.
- `drivers`: the seed model trained 3 steps under the `jit` and `pmap` (shard_map) drivers on
  every visible device, each against one device on the same global batches (parameters' largest
  difference).
- `train_resume`: the seed model trained 4 steps on `mm_shapes` straight, and 2 + 2 with a stop
  and a resume in between: the parameters' largest difference (0 means bit-exact resume).

Tolerances are float32 with TF32 matmuls on NVIDIA GPUs (JAX's default precision: a relative
error near 1e-3), bfloat16 for the attention kernel. `--tiny` shrinks every size (what the CPU
test runs). A section that would start past `--budget-seconds` is skipped and says so.
"""
import argparse
import functools
import json
import os
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import data
from mmjax.data import mm_shapes
from mmjax.encoders.image import ConvPoolImageEncoder
from mmjax.model import model_from_config
from mmjax.tasks.objective import tasks_from_config
from mmjax.train import flops, loop, parallel
from mmjax.train.defaults import load_config
from mmjax.train.state import init_state, make_optimizer

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="gpu_check.json", help="the JSON report")
  parser.add_argument("--budget-seconds", type=float, default=420.0,
                      help="no section starts after this many seconds")
  parser.add_argument("--batch", type=int, default=256, help="batch size of the MFU runs")
  parser.add_argument("--steps", type=int, default=20, help="timed steps of each MFU run")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
  parser.add_argument("--data-dir", default="", help="where mm_shapes is (or is generated; "
                      "default: a temporary folder)")
  return parser.parse_args(argv)


def _config(name: str, dtype: str = "float32", devices: int = 1, driver: str = "jit",
            tiny: bool = False):
  config = load_config(os.path.join(CONFIGS, name))
  config.model.dtype, config.parallel.num_devices, config.parallel.driver = dtype, devices, driver
  if tiny:
    text = config.model.encoders.text
    if "hidden_dim" in text:
      text.hidden_dim = 8
    else:
      text.model_dim, text.mlp_dim, text.vocab_size = 16, 16, 64
    image = config.model.encoders.image
    if "channels" in image:
      image.channels = 4
    else:
      image.stage_channels = (4, 8)
  return config


def _driver_and_state(config, batch):
  model = model_from_config(config.model, config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  init = lambda rng: init_state(model, tx, rng, batch)
  driver = parallel.make_driver(config.parallel, jax.eval_shape(init, jax.random.key(0)),
                                tasks=tasks_from_config(config.tasks), schedule=schedule)
  state = jax.jit(init, out_shardings=driver.state_sharding)(jax.random.key(0))
  rng = jax.jit(lambda: jax.random.key(1), out_shardings=driver.replicated)()
  return driver, state, rng


def mfu_case(name: str, dtype: str, batch_size: int, steps: int, tiny: bool) -> dict:
  config = _config(name, dtype, tiny=tiny)
  batch = mm_shapes.random_batch(batch_size)
  driver, state, rng = _driver_and_state(config, batch)
  global_batch = driver.put_batch(batch)
  model_flops = flops.matmul_flops(driver.train, state, global_batch, rng)
  for _ in range(2):
    state, metrics = driver.train(state, global_batch, rng)
  jax.block_until_ready(metrics)
  state, metrics, step = flops.median_step_seconds(driver.train, state, global_batch, rng, steps)
  peak = flops.peak_flops(jax.devices()[0].device_kind, dtype)
  return {"config": name, "dtype": dtype, "batch": batch_size, "step_ms": 1000 * step,
          "samples_per_s": batch_size / step, "model_flops_per_step": model_flops,
          "peak_flops": peak, "mfu": flops.mfu(model_flops, step, 1, peak),
          "loss_finite": bool(np.isfinite(float(metrics["values"]["loss"])))}


def relative_error(found, expected) -> float:
  found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
  return float(np.max(np.abs(found - expected)) / max(np.max(np.abs(expected)), 1e-30))


def conv_pool_check(tiny: bool) -> dict:
  """The XLA path on the default device against the fused path on the CPU."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(8 if tiny else 64, 32, 32, 3)).astype(np.float32)
  results = {}
  for implementation, device in (("xla", jax.devices()[0]), ("fused", jax.devices("cpu")[0])):
    encoder = ConvPoolImageEncoder(channels=8 if tiny else 64, implementation=implementation)
    with jax.default_device(device):
      params = encoder.init(jax.random.key(0), jnp.asarray(images))
      loss = lambda p: jnp.sum(encoder.apply(p, jnp.asarray(images)) ** 2)
      value, grads = jax.jit(jax.value_and_grad(loss))(params)
      outputs = encoder.apply(params, jnp.asarray(images))
    results[implementation] = jax.device_get((outputs, value, grads))
  (xla_out, _, xla_grads), (fused_out, _, fused_grads) = results["xla"], results["fused"]
  errors = {"output": relative_error(xla_out, fused_out),
            **{f"grad_{name}": relative_error(xla_grads["params"][name],
                                              fused_grads["params"][name])
               for name in ("kernel", "bias")}}
  return {"backend": jax.default_backend(), "relative_errors": errors,
          "max_relative_error": max(errors.values()), "tolerance": 1e-2,
          "ok": max(errors.values()) <= 1e-2}


def attention_check(tiny: bool) -> dict:
  """`jax.nn.dot_product_attention`'s fused kernel (cuDNN where present) against the plain one."""
  rng = np.random.default_rng(1)
  batch, length, heads, width = (2, 16, 2, 16) if tiny else (8, 128, 8, 64)
  q, k, v = (jnp.asarray(rng.normal(size=(batch, length, heads, width)), jnp.bfloat16)
             for _ in range(3))
  lengths = rng.integers(1, length + 1, batch)
  mask = jnp.asarray(np.arange(length)[None, :] < lengths[:, None])
  attention_mask = mask[:, None, None, :]    # (B, 1, 1, T): real keys
  logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
  logits = jnp.where(attention_mask, logits / np.sqrt(width), -1e30)
  plain = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v.astype(jnp.float32))
  implementation = "cudnn" if jax.default_backend() == "gpu" else "xla"
  try:
    fused = jax.jit(functools.partial(jax.nn.dot_product_attention,
                                      implementation=implementation))(q, k, v, mask=attention_mask)
  except Exception as error:   # noqa: BLE001 (no such kernel here: say so)
    return {"implementation": implementation, "available": False, "ok": True,
            "note": f"{type(error).__name__}: {error}"[:300]}
  error = relative_error(fused.astype(jnp.float32), plain)
  return {"implementation": implementation, "available": True, "relative_error": error,
          "tolerance": 2e-2, "ok": error <= 2e-2}


def drivers_check(tiny: bool) -> dict:
  """Both drivers on every device against one device, 3 steps on the same batches."""
  count = jax.device_count()
  batch = mm_shapes.random_batch(8 * count)
  reference = None
  report = {"devices": count}
  for driver_name, devices in (("jit", 1), ("jit", count), ("pmap", count)):
    config = _config("seed_text_image.py", devices=devices, driver=driver_name, tiny=tiny)
    driver, state, rng = _driver_and_state(config, batch)
    global_batch = driver.put_batch(batch)
    for _ in range(3):
      state, _ = driver.train(state, global_batch, rng)
    params = jax.device_get(state.params)
    if reference is None:
      reference = params
      continue
    report[f"{driver_name}_max_difference"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(params),
                                                     jax.tree.leaves(reference)))
  report["tolerance"] = 1e-4
  report["ok"] = all(v <= 1e-4 for k, v in report.items() if k.endswith("_difference"))
  return report


def train_resume_check(tiny: bool, data_dir: str = "") -> dict:
  with tempfile.TemporaryDirectory() as directory:
    data_dir = data_dir or os.path.join(directory, "tfds")
    data.prepare("mm_shapes", data_dir)
    config = _config("seed_text_image.py", tiny=tiny)
    config.dataset.data_dir = data_dir
    config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 4, 1, 2
    config.batch_size, config.optimizer.warmup_steps = 16, 0
    config.evals.validation.every_steps = 0
    straight, resumed = os.path.join(directory, "straight"), os.path.join(directory, "resumed")
    loop.train_and_evaluate(config, straight)
    loop.train_and_evaluate(config, resumed, stop_after_step=2)
    results = loop.train_and_evaluate(config, resumed)
    params = [jax.device_get(loop.restore_checkpoint(config, workdir).state.params)
              for workdir in (straight, resumed)]
  difference = max(float(np.max(np.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, params)))
  return {"max_difference": difference, "bit_exact": difference == 0.0,
          "test_accuracy": results["test"]["accuracy"], "tolerance": 1e-5,
          "ok": difference <= 1e-5}


def run_sections(args) -> dict:
  started = time.perf_counter()
  report = {"environment": {"jax": jax.__version__, "backend": jax.default_backend(),
                            "devices": [d.device_kind for d in jax.devices()], "ok": True}}
  batch, steps = (8, 2) if args.tiny else (args.batch, args.steps)
  sections = [(f"mfu/{name}/{dtype}", functools.partial(mfu_case, name, dtype, batch, steps,
                                                        args.tiny))
              for name in ("transformer_resnet.py", "seed_text_image.py")
              for dtype in ("bfloat16", "float32")]
  sections += [("conv_pool", functools.partial(conv_pool_check, args.tiny)),
               ("attention", functools.partial(attention_check, args.tiny)),
               ("drivers", functools.partial(drivers_check, args.tiny)),
               ("train_resume", functools.partial(train_resume_check, args.tiny, args.data_dir))]
  for name, section in sections:
    elapsed = time.perf_counter() - started
    if elapsed > args.budget_seconds:
      report[name] = {"ok": False, "skipped": f"the budget ({args.budget_seconds} s) was spent"}
      continue
    start = time.perf_counter()
    try:
      report[name] = section()
      report[name].setdefault("ok", report[name].get("loss_finite", True))
    except Exception as error:   # noqa: BLE001 (one section's failure must not hide the rest)
      report[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500],
                      "traceback": traceback.format_exc()[-2000:]}
    report[name]["seconds"] = time.perf_counter() - start
    print(json.dumps({"section": name, **report[name]}, default=str), flush=True)
  report["total_seconds"] = time.perf_counter() - started
  return report


def table(report: dict) -> str:
  lines = [f"{'section':42} {'ok':5} {'seconds':>8}  result"]
  for name, record in report.items():
    if not isinstance(record, dict):
      continue
    if "mfu" in record:
      mfu = "null" if record["mfu"] is None else f"{100 * record['mfu']:.1f}%"
      result = f"step {record['step_ms']:.1f} ms, {record['samples_per_s']:.0f}/s, MFU {mfu}"
    else:
      result = record.get("error") or record.get("skipped") or ", ".join(
          f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
          if k not in ("ok", "seconds", "traceback") and not isinstance(v, (dict, list)))
    lines.append(f"{name:42} {str(record.get('ok')):5} {record.get('seconds', 0):8.1f}  "
                 f"{result}"[:200])
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  report = run_sections(args)
  with open(args.out, "w") as file:
    json.dump(report, file, indent=2, default=str)
  print(table(report))
  print(f"gpu_check: {args.out}, {report['total_seconds']:.0f} s")
  return 0 if all(r.get("ok") for r in report.values() if isinstance(r, dict)) else 1


if __name__ == "__main__":
  sys.exit(main())
