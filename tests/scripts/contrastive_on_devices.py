"""Compares the contrastive losses, their gradients and the retrieval counts computed per device
under `shard_map` on this host's devices with the same quantities on one device, and prints, as
one JSON line, the largest absolute difference of each loss and gradient (with the gradients'
norms, so that a vanishing gradient cannot pass) and both runs' retrieval counts.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python contrastive_on_devices.py

Run by tests/test_contrastive.py in a subprocess, because the device count is fixed before JAX
starts. The per-device form mirrors `mmjax/train/step.py`: each device divides its loss sum by
the psum'd count of real rows, differentiates that share, and the gradients of the replicated
parameters are psum'd (`check_vma=False`); the gradients of the embeddings stay split by rows."""
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, PartitionSpec as P

from mmjax.tasks.contrastive import CONTRASTIVE_LOSSES, contrastive_loss, retrieval_sums

BATCH, DIM = 16, 8
PADDING_ROWS = (5, 14)   # on devices 2 and 7 of 8


def batch():
  """Paired rows b ≈ a + noise, with padding rows that would be strong distractors if they
  counted: their b rows copy real rows of a."""
  rng = np.random.default_rng(0)
  weights = np.ones(BATCH, np.float32)
  weights[list(PADDING_ROWS)] = 0.0
  a = rng.normal(size=(BATCH, DIM)).astype(np.float32)
  b = a + rng.normal(size=(BATCH, DIM)).astype(np.float32)
  b[list(PADDING_ROWS)] = a[[0, 8]]
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


def mean_share(name, params, a, b, weights, count, axis_name):
  """This device's share of the global mean loss; the embeddings pass through a replicated
  projection, as a model's would."""
  a, b = normalized(a @ params["projection"]), normalized(b @ params["projection"])
  return contrastive_loss(name, a, b, params["log_scale"], params["bias"], weights,
                          axis_name) / count


def one_device(name, params, a, b, weights):
  return jax.jit(jax.value_and_grad(
      lambda *args: mean_share(name, *args, weights, weights.sum(), None), argnums=(0, 1, 2)))(
          params, a, b)


def many_devices(name, mesh, params, a, b, weights):
  def per_device(params, a, b, weights):
    count = jax.lax.psum(weights.sum(), "data")
    loss, (param_grads, a_grad, b_grad) = jax.value_and_grad(
        lambda *args: mean_share(name, *args, weights, count, "data"), argnums=(0, 1, 2))(
            params, a, b)
    loss, param_grads = jax.lax.psum((loss, param_grads), "data")
    return loss, (param_grads, a_grad, b_grad)

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data")),
      out_specs=(P(), (P(), P("data"), P("data"))), check_vma=False))(params, a, b, weights)


def retrieval_on_devices(mesh, a, b, weights):
  return jax.jit(jax.shard_map(
      lambda a, b, weights: jax.lax.psum(retrieval_sums(a, b, weights, "data"), "data"),
      mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P(),
      check_vma=False))(a, b, weights)


def max_abs_diff(x, y) -> float:
  return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
             for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def global_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


def main():
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  params, a, b, weights = batch()
  report = {"devices": jax.device_count()}
  for name in CONTRASTIVE_LOSSES:
    (loss, grads), (sharded_loss, sharded_grads) = (
        one_device(name, params, a, b, weights), many_devices(name, mesh, params, a, b, weights))
    report[name] = {"loss": float(loss), "loss_diff": max_abs_diff(loss, sharded_loss)}
    for key, grad, sharded in zip(("params", "a", "b"), grads, sharded_grads):
      report[name][f"{key}_grad_diff"] = max_abs_diff(grad, sharded)
      report[name][f"{key}_grad_norm"] = global_norm(grad)
  for key, (x, y) in {"retrieval": (a, b), "retrieval_ties": tied_batch()}.items():
    one, many = retrieval_sums(x, y, weights), retrieval_on_devices(mesh, x, y, weights)
    report[key] = {"one": {k: float(v) for k, v in one.items()},
                   "many": {k: float(v) for k, v in many.items()}}
  print(json.dumps(report))


if __name__ == "__main__":
  main()
