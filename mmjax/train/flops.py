"""Model FLOPs and model FLOPs utilisation (MFU).

XLA's cost analysis counts a loop's body once, whatever its trip count: a `lax.scan` over T steps
(the LSTM encoder, gradient accumulation's micro-batches) is counted as one step (measured: a
scan of 1, 2 or 8 matmuls gives the same count). `matmul_flops` counts instead, from the
function's jaxpr, the FLOPs of every matrix product and convolution, each scan's body times its
length: the "model FLOPs" of MFU (Chowdhery et al. 2022, PaLM, appendix B), which leave out
elementwise work. A `while_loop` with a trip count unknown when tracing is counted once; a `cond`
counts its costliest branch; a `shard_map` body (per-device shapes) counts once per device.

    dot_general:          2 · |lhs| · Π(rhs dimensions that are neither contracted nor batch)
    conv_general_dilated: 2 · |output| · Π(kernel spatial dimensions) · kernel input features

MFU = model FLOPs of a step / step time / (devices · one device's peak FLOP/s), the peak from
`PEAK_FLOPS` by the device kind and the model's compute dtype (dense, no sparsity): bfloat16
(and float16) the tensor-core or MXU peak; float32 on NVIDIA GPUs the TF32 tensor-core peak, which
XLA uses for float32 matmuls at JAX's default precision. Unknown devices (the CPU among them) and
float32 on TPUs have no peak: MFU is None.
"""
import math
import statistics
import time
from typing import Any, Callable, Optional, Tuple

import jax

# Substring of `device.device_kind` -> {compute dtype: dense peak FLOP/s of one device}, the
# vendors' data sheets. Checked in order: the first match wins.
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 495e12}),        # SXM
    ("H200", {"bfloat16": 989e12, "float32": 495e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("L4", {"bfloat16": 121e12, "float32": 60e12}),
    ("TPU v4", {"bfloat16": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),
    ("TPU v5", {"bfloat16": 459e12}),                          # v5p
    ("TPU v6 lite", {"bfloat16": 918e12}),
)


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
  """One device's dense peak FLOP/s for `dtype` (float16 counts as bfloat16), None if unknown."""
  dtype = "bfloat16" if dtype in ("bfloat16", "float16") else dtype
  for pattern, peaks in PEAK_FLOPS:
    if pattern in device_kind:
      return peaks.get(dtype)
  return None


def _eqn_flops(eqn: Any) -> float:
  name = eqn.primitive.name
  if name == "dot_general":
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (_, rhs_contracted), (_, rhs_batch) = eqn.params["dimension_numbers"]
    free = [size for d, size in enumerate(rhs) if d not in (*rhs_contracted, *rhs_batch)]
    return 2.0 * math.prod(lhs) * math.prod(free)
  if name == "conv_general_dilated":
    rhs = eqn.invars[1].aval.shape
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec   # (out features, in features, spatial)
    spatial = math.prod(rhs[d] for d in rhs_spec[2:])
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * spatial * rhs[rhs_spec[1]]
  return 0.0


def _sub_jaxprs(value: Any):
  """The jaxprs held by an equation parameter (a jaxpr, a closed one, or a tuple of them)."""
  values = value if isinstance(value, (tuple, list)) else (value,)
  for item in values:
    inner = getattr(item, "jaxpr", item)
    if hasattr(inner, "eqns"):
      yield inner


def jaxpr_flops(jaxpr: Any) -> float:
  """The model FLOPs of a jaxpr (module docstring), recursing into the jaxprs it calls."""
  total = 0.0
  for eqn in jaxpr.eqns:
    total += _eqn_flops(eqn)
    if eqn.primitive.name == "cond":
      total += max(jaxpr_flops(branch) for branch in _sub_jaxprs(eqn.params["branches"]))
      continue
    repeat = 1
    if eqn.primitive.name == "scan":
      repeat = eqn.params["length"]
    elif eqn.primitive.name == "shard_map":
      repeat = eqn.params["mesh"].size
    for value in eqn.params.values():
      total += repeat * sum(jaxpr_flops(inner) for inner in _sub_jaxprs(value))
  return total


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
  """The model FLOPs of one call `fn(*args)` (traced, not run)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def mfu(flops_per_step: float, step_seconds: float, devices: int,
        peak: Optional[float]) -> Optional[float]:
  """Model FLOPs utilisation: flops_per_step / step_seconds / (devices · peak); None without a
  peak."""
  if peak is None or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / (devices * peak)


def median_step_seconds(train: Callable[..., Any], state: Any, batch: Any, rng: Any,
                        steps: int) -> Tuple[Any, Any, float]:
  """`(state, metrics, median seconds)` of `steps` calls of `train(state, batch, rng)`, each timed
  to its results being ready (benchmarks: warm the step up first)."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return state, metrics, statistics.median(times)
