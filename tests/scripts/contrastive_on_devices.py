"""Compares the contrastive losses, their gradients and the retrieval counts computed on this
host's devices, in every layout (`full`, `local`, `ring`) and chunk size, with the same quantities
on one device (`full`, the one-device formula), and prints, as one JSON line, the largest absolute
difference of each loss and gradient (with the gradients' norms, so that a vanishing gradient
cannot pass) and each run's retrieval counts. Two forms on the devices: `per_device`, the step of
the pmap driver (shard_map with `axis_name`), and `jit`, the jit driver's (global arrays split
over a (4, 2) mesh, the step traced inside it with no `axis_name`).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python contrastive_on_devices.py

Run by tests/test_contrastive.py in a subprocess, because the device count is fixed before JAX
starts. The per-device form mirrors `mmjax/train/step.py`: each device divides its loss sum by
the psum'd count of real rows, differentiates that share, and the gradients of the replicated
parameters are psum'd (`check_vma=False`); the gradients of the embeddings stay split by rows."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mmjax.tasks.contrastive import CONTRASTIVE_LOSSES, LAYOUTS, contrastive_loss, retrieval_sums

BATCH, DIM = 40, 8
PADDING_ROWS = (5, 14, 30)   # on devices 1, 2 and 6 of 8
CHUNK_SIZES = (0, 2)         # 0: a device's whole block (5 columns); 2: 3 chunks of 2, 1 padding
# (layout, chunk size): `full` has no chunks
RUNS = [("full", 0)] + [(layout, size) for layout in LAYOUTS if layout != "full"
                        for size in CHUNK_SIZES]


def batch():
  """Paired rows b ≈ a + noise, with padding rows that would be strong distractors if they
  counted: their b rows copy real rows of a."""
  rng = np.random.default_rng(0)
  weights = np.ones(BATCH, np.float32)
  weights[list(PADDING_ROWS)] = 0.0
  a = rng.normal(size=(BATCH, DIM)).astype(np.float32)
  b = a + rng.normal(size=(BATCH, DIM)).astype(np.float32)
  b[list(PADDING_ROWS)] = a[[0, 8, 9]]
  params = {"log_scale": jnp.float32(np.log(5.0)), "bias": jnp.float32(-2.0),
            "projection": jnp.asarray(np.eye(DIM) + 0.1 * rng.normal(size=(DIM, DIM)),
                                      jnp.float32)}
  return params, jnp.asarray(a), jnp.asarray(b), jnp.asarray(weights)


def tied_batch():
  """Embeddings in {-1, 0, 1}^3, b = a with one coordinate redrawn: many exact ties, whatever the
  summation order."""
  rng = np.random.default_rng(1)
  a = rng.integers(-1, 2, size=(BATCH, 3))
  b = a.copy()
  b[np.arange(BATCH), rng.integers(0, 3, size=BATCH)] = rng.integers(-1, 2, size=BATCH)
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


def normalized(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def mean_share(name, layout, chunk_size, params, a, b, weights, count, axis_name):
  """This device's share of the global mean loss; the embeddings pass through a replicated
  projection, as a model's would."""
  a, b = normalized(a @ params["projection"]), normalized(b @ params["projection"])
  return contrastive_loss(name, a, b, params["log_scale"], params["bias"], weights,
                          axis_name, layout, chunk_size) / count


def value_and_grads(name, layout, chunk_size, params, a, b, weights):
  """The global mean loss and its gradients w.r.t. the parameters and both embeddings."""
  return jax.value_and_grad(
      lambda *args: mean_share(name, layout, chunk_size, *args, weights, weights.sum(), None),
      argnums=(0, 1, 2))(params, a, b)


def one_device(name, layout, chunk_size, params, a, b, weights):
  return jax.jit(functools.partial(value_and_grads, name, layout, chunk_size))(
      params, a, b, weights)


def per_device(name, layout, chunk_size, mesh, params, a, b, weights):
  def step(params, a, b, weights):
    count = jax.lax.psum(weights.sum(), "data")
    loss, (param_grads, a_grad, b_grad) = jax.value_and_grad(
        lambda *args: mean_share(name, layout, chunk_size, *args, weights, count, "data"),
        argnums=(0, 1, 2))(params, a, b)
    loss, param_grads = jax.lax.psum((loss, param_grads), "data")
    return loss, (param_grads, a_grad, b_grad)

  return jax.jit(jax.shard_map(
      step, mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data")),
      out_specs=(P(), (P(), P("data"), P("data"))), check_vma=False))(params, a, b, weights)


def jit_on_mesh(name, layout, chunk_size, mesh, params, a, b, weights):
  """The jit driver's form: global arrays split over `mesh`, no axis_name, traced inside it."""
  def step(params, a, b, weights):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return value_and_grads(name, layout, chunk_size, params, a, b, weights)

  rows = NamedSharding(mesh, P(mesh.axis_names))
  return jax.jit(step)(params, *(jax.device_put(x, rows) for x in (a, b, weights)))


def retrieval_per_device(layout, chunk_size, mesh, a, b, weights):
  return jax.jit(jax.shard_map(
      lambda a, b, weights: jax.lax.psum(retrieval_sums(
          a, b, weights, "data", layout=layout, chunk_size=chunk_size), "data"),
      mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P(),
      check_vma=False))(a, b, weights)


def retrieval_jit(layout, chunk_size, mesh, a, b, weights):
  def sums(a, b, weights):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return retrieval_sums(a, b, weights, layout=layout, chunk_size=chunk_size)

  rows = NamedSharding(mesh, P(mesh.axis_names))
  return jax.jit(sums)(*(jax.device_put(x, rows) for x in (a, b, weights)))


def max_abs_diff(x, y) -> float:
  return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
             for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def global_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


def main():
  line = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  grid = jax.make_mesh((4, jax.device_count() // 4), ("data", "fsdp"),
                       axis_types=(AxisType.Auto, AxisType.Auto))
  params, a, b, weights = batch()
  report = {"devices": jax.device_count()}
  for name in CONTRASTIVE_LOSSES:
    loss, grads = one_device(name, "full", 0, params, a, b, weights)
    report[name] = {"loss": float(loss), "params_grad_norm": global_norm(grads[0]),
                    "a_grad_norm": global_norm(grads[1]), "b_grad_norm": global_norm(grads[2])}
    for layout, chunk_size in RUNS:
      runs = {"per_device": per_device(name, layout, chunk_size, line, params, a, b, weights),
              "jit": jit_on_mesh(name, layout, chunk_size, grid, params, a, b, weights)}
      for form, (run_loss, run_grads) in runs.items():
        report[name][f"{form}/{layout}/{chunk_size}"] = {
            "loss_diff": max_abs_diff(loss, run_loss),
            **{f"{key}_grad_diff": max_abs_diff(grad, run_grad)
               for key, grad, run_grad in zip(("params", "a", "b"), grads, run_grads)}}
  for key, (x, y) in {"retrieval": (a, b), "retrieval_ties": tied_batch()}.items():
    as_floats = lambda sums: {k: float(v) for k, v in sums.items()}
    report[key] = {"one": as_floats(retrieval_sums(x, y, weights, layout="full"))}
    for layout, chunk_size in RUNS:
      report[key][f"per_device/{layout}/{chunk_size}"] = as_floats(
          retrieval_per_device(layout, chunk_size, line, x, y, weights))
      report[key][f"jit/{layout}/{chunk_size}"] = as_floats(
          retrieval_jit(layout, chunk_size, grid, x, y, weights))
  print(json.dumps(report))


if __name__ == "__main__":
  main()
