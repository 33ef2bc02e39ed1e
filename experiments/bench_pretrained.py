"""Loading and training pretrained towers at real size: load time, host memory, train-step speed
against transformers' PyTorch, and activation memory with and without rematerialisation.

    python experiments/bench_pretrained.py [--torch-python /path/to/venv/bin/python]

1. Writes a ViT-B/16-sized checkpoint of random float32 weights in the Hugging Face layout
   (config.json + model.safetensors, 86M parameters, no download) to a temporary folder and times
   `mmjax.pretrained.load` in a fresh process against reading the file once (goal: ≤ 2×), with
   the file in the page cache (warm) and, where this user may drop the page cache (root), from
   the disk (cold: caches dropped before each read and each load). Peak host memory that the
   load adds (the resident set's high-water mark, reset after the imports) against the file's
   size (goal: ≤ 1.2×).
2. The CLIP-B/16 image tower's train step (forward, backward, AdamW; loss: mean square of the
   image embeddings) at batch `--batch`, samples/s in mmjax (jit) and in transformers' PyTorch
   eager (`CLIPVisionModelWithProjection`, same config, same loss and optimizer), alternating
   `--rounds` times, each a median of `--steps` timed steps after one warm-up; the PyTorch side
   runs in `--torch-python` (a venv with torch and transformers; skipped without it).
3. XLA's compiled temporary memory of that step with `remat` none / dots / full, unrolled and
   as one `nn.scan` over the layers. (On XLA:CPU remat saves memory only when scanned: unrolled,
   the scheduler is free to hoist every layer's recomputation ahead of the backward pass, which
   it does; a scan's backward loop recomputes one layer per iteration.)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

VIT_B16 = dict(model_type="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, image_size=224,
               patch_size=16, num_channels=3, qkv_bias=True, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
CLIP_B16_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=224, patch_size=16,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512)

TORCH_WORKER = r'''
import json, statistics, sys, time
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
args = json.loads(sys.argv[1])
torch.manual_seed(0)
config = CLIPVisionConfig(**{k: v for k, v in args["config"].items()})
model = CLIPVisionModelWithProjection(config).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
images = torch.randn(args["batch"], 3, 224, 224)
def step():
    optimizer.zero_grad()
    loss = (model(pixel_values=images).image_embeds ** 2).mean()
    loss.backward()
    optimizer.step()
step()
times = []
for _ in range(args["steps"]):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "threads": torch.get_num_threads()}))
'''


def write_checkpoint(directory: str) -> int:
  """A ViT-B/16 of random weights in transformers' layout; returns the file's size in bytes."""
  import jax
  from mmjax.pretrained import loading, vit
  from mmjax.pretrained.files import write_safetensors
  module = vit.ViTImage(**vit.ViTImage.config_fields(VIT_B16))
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), np.zeros((1, 224, 224, 3),
                                                                            np.float32)))
  shapes = {"/".join(k): v.shape for k, v in
            __import__("flax").traverse_util.flatten_dict(abstract["params"]).items()}

  class Names:   # the table needs only `in` and the pooler's presence from the file
    def __contains__(self, name):
      return name in ("embeddings.cls_token", "pooler.dense.weight")
  table = module.pretrained_table(Names(), directory)
  rng = np.random.default_rng(0)
  tensors = {}
  for path, source in table.items():
    shape = shapes[path]
    if source.transform is loading.linear:
      reference = shape[::-1]
    elif source.transform is loading.conv:
      reference = (shape[3], shape[2], shape[0], shape[1])
    else:
      reference = shape
    tensors[source.name] = (0.02 * rng.standard_normal(reference)).astype(np.float32)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as file:
    json.dump(VIT_B16, file)
  path = os.path.join(directory, "model.safetensors")
  write_safetensors(path, tensors)
  return os.path.getsize(path)


def read_once(path: str) -> float:
  start = time.perf_counter()
  with open(path, "rb", buffering=0) as file:
    while file.read(64 << 20):
      pass
  return time.perf_counter() - start


def drop_page_cache() -> bool:
  """Writes back and drops the page cache (root only); whether it could."""
  try:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as file:
      file.write("1")
    return True
  except OSError:
    return False


def load_in_fresh_process(directory: str) -> dict:
  """`{seconds, peak_rss, baseline_rss}` of loading in a new interpreter (bytes): the resident
  set's high-water mark (VmHWM, reset through /proc/self/clear_refs after the imports, so the
  imports' own peak does not hide the load's) against the resident set before the load."""
  code = (
      "import json, time, sys\n"
      "import jax, jax.numpy as jnp\n"
      "import mmjax.pretrained as p\n"
      "jnp.zeros(1).block_until_ready()\n"
      "status = lambda key: int(next(l.split()[1] for l in open('/proc/self/status')\n"
      "                               if l.startswith(key))) * 1024\n"
      "open('/proc/self/clear_refs', 'w').write('5')\n"
      "base = status('VmRSS')\n"
      "start = time.perf_counter()\n"
      "loaded = p.load(sys.argv[1])\n"
      "jax.block_until_ready(loaded.params)\n"
      "seconds = time.perf_counter() - start\n"
      "peak = status('VmHWM')\n"
      "print(json.dumps({'seconds': seconds, 'peak_rss': peak, 'baseline_rss': base}))\n")
  output = subprocess.run([sys.executable, "-c", code, directory], capture_output=True, text=True,
                          check=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def mmjax_step(batch: int, remat: str = "none", scan: bool = False):
  """`(jitted step, state, images)` of the CLIP-B/16 image tower's AdamW train step."""
  import jax
  import optax
  from mmjax.pretrained.clip import CLIPVision
  fields = dict(CLIP_B16_VISION)
  tower = CLIPVision(hidden_size=fields["hidden_size"], num_layers=fields["num_hidden_layers"],
                     num_heads=fields["num_attention_heads"], mlp_dim=fields["intermediate_size"],
                     activation=fields["hidden_act"], layer_norm_eps=fields["layer_norm_eps"],
                     image_size=224, patch_size=16, projection_dim=512, remat=remat, scan=scan)
  images = jax.random.normal(jax.random.key(1), (batch, 224, 224, 3))
  params = tower.init(jax.random.key(0), images[:1])
  tx = optax.adamw(1e-5, weight_decay=0.1)
  opt_state = tx.init(params)

  def step(params, opt_state, images):
    loss, grads = jax.value_and_grad(lambda p: (tower.apply(p, images) ** 2).mean())(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1)), (params, opt_state), images


def time_mmjax(batch: int, steps: int) -> float:
  import jax
  step, (params, opt_state), images = mmjax_step(batch)
  params, opt_state, loss = step(params, opt_state, images)
  jax.block_until_ready(loss)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, images)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_torch(python: str, batch: int, steps: int) -> dict:
  config = dict(CLIP_B16_VISION, attention_dropout=0.0)
  output = subprocess.run([python, "-c", TORCH_WORKER, json.dumps(
      {"config": config, "batch": batch, "steps": steps})], capture_output=True, text=True,
      check=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def remat_memory(batch: int) -> dict:
  found = {}
  for scan in (False, True):
    for remat in ("none", "dots", "full"):
      step, (params, opt_state), images = mmjax_step(batch, remat, scan)
      analysis = step.lower(params, opt_state, images).compile().memory_analysis()
      found["scan" if scan else "unrolled", remat] = analysis.temp_size_in_bytes
  return found


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--torch-python", default=None)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  import jax
  print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}")

  with tempfile.TemporaryDirectory() as directory:
    size = write_checkpoint(directory)
    path = os.path.join(directory, "model.safetensors")
    read_once(path)
    warm_read = statistics.median(read_once(path) for _ in range(3))
    loads = [load_in_fresh_process(directory) for _ in range(3)]
    cold_reads, cold_loads = [], []
    for _ in range(3):
      if drop_page_cache():
        cold_reads.append(read_once(path))
        drop_page_cache()
        cold_loads.append(load_in_fresh_process(directory)["seconds"])
  load = statistics.median(r["seconds"] for r in loads)
  peak = statistics.median(r["peak_rss"] - r["baseline_rss"] for r in loads)
  print(f"ViT-B/16 checkpoint: {size / 1e6:.0f} MB, {len(loads)} fresh processes each")
  print(f"  warm: reading it once {warm_read:.2f} s, mmjax.pretrained.load {load:.2f} s "
        f"({load / warm_read:.2f}x the read; goal <= 2x)")
  if cold_loads:
    read, cold = statistics.median(cold_reads), statistics.median(cold_loads)
    print(f"  cold: reading it once {read:.2f} s, mmjax.pretrained.load {cold:.2f} s "
          f"({cold / read:.2f}x the read)")
  print(f"  peak host memory added by the load: {peak / 1e6:.0f} MB = {peak / size:.2f}x the "
        "file (goal <= 1.2x)")

  mmjax_times, torch_times = [], []
  for _ in range(args.rounds):
    mmjax_times.append(time_mmjax(args.batch, args.steps))
    if args.torch_python:
      torch_times.append(time_torch(args.torch_python, args.batch, args.steps)["median_s"])
  mine = args.batch / statistics.median(mmjax_times)
  print(f"CLIP-B/16 image tower train step, batch {args.batch}: mmjax {mine:.2f} samples/s")
  if torch_times:
    theirs = args.batch / statistics.median(torch_times)
    print(f"  transformers PyTorch eager {theirs:.2f} samples/s; mmjax / PyTorch = "
          f"{mine / theirs:.2f}x (goal >= 1.5x); medians of {args.rounds} alternating rounds")
  for (layout, remat), temp in remat_memory(args.batch).items():
    print(f"  XLA temporary memory of the step, {layout}, remat={remat}: {temp / 1e6:.0f} MB")


if __name__ == "__main__":
  main()
