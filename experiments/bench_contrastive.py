"""Memory of the contrastive losses' layouts (`mmjax/tasks/contrastive.py`) on 8 virtual CPU
devices, from XLA's memory analysis of compiled programs (nothing is run, so batches far beyond
this host's memory can be measured).

    python experiments/bench_contrastive.py                    # both parts, 8 virtual devices
    python experiments/bench_contrastive.py --part loss --batches 1024,4096,16384,32768

Part `loss`: the loss and its gradient w.r.t. both embeddings, the scale and the bias, per device
under the jit driver's form (global arrays split over the mesh, the program traced inside it), for
each global batch B, embedding width `--dim`, loss and method: `full` (every device forms the
B × B matrix: the all-gather reference), `local` (its b = B/8 rows against the B gathered
columns, as open_clip's local loss, scored one device's block of b columns at a time),
`local/1024` (the same in chunks of at most 1024 columns), `ring` (blocks passed around the
devices, b × b logits per hop: the SigLIP paper's chunked form) and `ring/1024`. One JSON line each: `temp_mb` (XLA's temporary buffers of one device),
`logit_block_mb` (the block of float32 logits the method forms at once: B², b², or b·c with
chunks of c < b columns),
and `growth` (log(temp / temp at the previous B) / log(B / previous B): 2 is quadratic, 1 linear).

Part `host`: the largest global batch of the seed-size towers (`seed_text_image.py`: 2-layer LSTM
256, conv_pool 64 on 32 × 32 images; a contrastive head, embed_dim 256) whose whole train step
fits a `--host-gb` host with 8 devices, for each method and accumulation: the step's per-device
arguments + outputs + temporaries (less what is donated) times 8, searched by doubling from 1,024
and then bisecting to 1/8 of the batch. One JSON line per method.
"""
import argparse
import math
import os
import sys


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="loss,host", help="loss, host or both, comma-separated")
  parser.add_argument("--batches", default="1024,4096,16384,32768",
                      help="global batches of the loss part, comma-separated")
  parser.add_argument("--dim", type=int, default=64, help="embedding width of the loss part")
  parser.add_argument("--losses", default="siglip,infonce")
  parser.add_argument("--host-gb", type=float, default=24.0)
  parser.add_argument("--accumulation", default="1,8",
                      help="micro-batches of the host part, comma-separated")
  return parser.parse_args(argv)


ARGS = parse_args()
DEVICES = 8
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={DEVICES}")

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

from mmjax.data import mm_shapes  # noqa: E402
from mmjax.model import head_config, model_from_config  # noqa: E402
from mmjax.tasks import contrastive, task_config  # noqa: E402
from mmjax.tasks.objective import tasks_from_config  # noqa: E402
from mmjax.train import parallel  # noqa: E402
from mmjax.train.defaults import load_config  # noqa: E402
from mmjax.train.state import init_state, make_optimizer  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
CHUNK = 1024
# name: (layout, chunk size)
METHODS = {"full": ("full", 0), "local": ("local", 0), f"local/{CHUNK}": ("local", CHUNK),
           "ring": ("ring", 0), f"ring/{CHUNK}": ("ring", CHUNK)}
MB = 2 ** 20


def logit_block(method: str, batch: int) -> int:
  """Float32 logits held at once by `method` at global batch `batch` (one direction)."""
  layout, chunk = METHODS[method]
  if layout == "full":
    return 4 * batch * batch
  rows = batch // DEVICES   # against one device's block of columns at a time
  return 4 * rows * (min(chunk, rows) if chunk else rows)


def loss_memory(loss: str, method: str, batch: int, dim: int) -> dict:
  """XLA's per-device memory of the loss and its gradient at global batch `batch`."""
  layout, chunk = METHODS[method]
  mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))

  def mean_loss(a, b, log_scale, bias):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return contrastive.contrastive_loss(loss, a, b, log_scale, bias, None, None, layout,
                                          chunk) / batch

  rows = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  compiled = jax.jit(jax.value_and_grad(mean_loss, argnums=(0, 1, 2, 3))).lower(
      rows, rows, scalar, scalar).compile()
  return {"temp_mb": compiled.memory_analysis().temp_size_in_bytes / MB}


def loss_part():
  batches = [int(b) for b in ARGS.batches.split(",")]
  for loss in ARGS.losses.split(","):
    for method in METHODS:
      previous = None
      for batch in batches:
        found = loss_memory(loss, method, batch, ARGS.dim)
        growth = (None if previous is None else
                  math.log(found["temp_mb"] / previous[1]) / math.log(batch / previous[0]))
        previous = (batch, found["temp_mb"])
        print(json.dumps({"part": "loss", "loss": loss, "method": method, "batch": batch,
                          "dim": ARGS.dim, "devices": DEVICES, **found,
                          "logit_block_mb": logit_block(method, batch) / MB,
                          "growth": growth}), flush=True)


def seed_contrastive_config(layout: str, chunk: int, accumulation: int):
  config = load_config(os.path.join(CONFIGS, "seed_text_image.py"))
  config.model.heads.pair = head_config("contrastive", modalities=("text", "image"),
                                        embed_dim=256)
  del config.model.heads["label"]
  config.tasks = {"pair": task_config("contrastive", loss="siglip", layout=layout,
                                      chunk_size=chunk)}
  config.grad_accum_steps = accumulation
  return config


def step_bytes(config, batch: int) -> int:
  """Bytes the compiled train step holds on the host's devices at global batch `batch`."""
  model = model_from_config(config.model, config.tasks)
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)
  example = mm_shapes.random_batch(8)
  init = lambda rng: init_state(model, tx, rng, example)
  abstract_state = jax.eval_shape(init, jax.random.key(0))
  driver = parallel.make_driver(config.parallel, abstract_state,
                                tasks=tasks_from_config(config.tasks), schedule=schedule,
                                grad_accum_steps=config.grad_accum_steps)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract_state, driver.state_sharding)
  batch_shapes = {k: jax.ShapeDtypeStruct((batch, *v.shape[1:]), v.dtype,
                                          sharding=driver.batch_sharding)
                  for k, v in example.items() if k != "label"}
  rng = jax.ShapeDtypeStruct(jax.random.key(1).shape, jax.random.key(1).dtype,
                             sharding=driver.replicated)
  memory = driver.train.lower(state, batch_shapes, rng).compile().memory_analysis()
  per_device = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return DEVICES * per_device


def largest_batch(config, limit: int, quantum: int) -> tuple:
  """The largest multiple of `quantum` whose step fits `limit` bytes (doubling, then bisecting
  to 1/8 of it), and its bytes."""
  fits = lambda batch: step_bytes(config, batch) <= limit
  low, high = 0, quantum
  while fits(high):
    low, high = high, 2 * high
  step = max(quantum, high // 16)
  while high - low > step:
    middle = (low + high) // 2 // quantum * quantum
    low, high = (middle, high) if fits(middle) else (low, middle)
  return low, (step_bytes(config, low) if low else None)


def host_part():
  limit = int(ARGS.host_gb * 2 ** 30)
  for accumulation in (int(k) for k in ARGS.accumulation.split(",")):
    for method, (layout, chunk) in METHODS.items():
      config = seed_contrastive_config(layout, chunk, accumulation)
      batch, used = largest_batch(config, limit, 1024 * accumulation)
      print(json.dumps({"part": "host", "method": method, "accumulation": accumulation,
                        "largest_batch": batch, "host_gb": ARGS.host_gb,
                        "step_gb": used / 2 ** 30 if used else None,
                        "devices": DEVICES}), flush=True)


def main():
  parts = ARGS.part.split(",")
  if "loss" in parts:
    loss_part()
  if "host" in parts:
    host_part()
  if not set(parts) <= {"loss", "host"}:
    sys.exit(f"--part {ARGS.part!r}: use loss, host or loss,host")


if __name__ == "__main__":
  main()
