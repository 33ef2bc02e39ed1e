"""Drivers: the one pure train and eval step (`mmjax/train/step.py`) on one device, on every
device of a host, and on many hosts. `config.parallel.driver` picks one:

- `jit` (default): `jax.jit` over a mesh with axes ('data', 'fsdp'). A batch is one global array
  whose batch dimension is split over every device; parameters and optimizer state are
  replicated, or split along 'fsdp' for the parameters matching `config.parallel.fsdp_rules`
  (each such array along its largest dimension divisible by the 'fsdp' size). XLA inserts the
  collectives; the state's buffers are donated.
- `pmap`: the explicit per-device form, written with `jax.shard_map` over a 1-D 'data' mesh
  rather than `jax.pmap`: current JAX recommends shard_map for new code, it composes with jit,
  takes the same global arrays and mesh as the jit driver (no replicate/unreplicate of the state,
  no leading device axis in the data), and the step is the same function, called per device
  with `axis_name='data'` so that gradients and metric sums are combined with `lax.psum`.
  Dropout masks are drawn per device (the device index is folded into the key), so with dropout
  the two drivers sample differently; without it they compute the same update.

Under `jit` the step is traced inside its mesh (`jax.sharding.use_abstract_mesh`), so that a
contrastive loss forms each device's share of the logits per device, as under `pmap`.

Both give the parameters of one device on the same global batches, up to float32 summation order
(tested). On many hosts every process runs the same program: `initialize_distributed` first, then
each process reads its own rows of every global batch and `put_batch` assembles the global array
with `jax.make_array_from_process_local_data`.
"""
import dataclasses
import functools
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mmjax.balancing import NoBalancing
from mmjax.tasks.weighting import Fixed
from mmjax.train.step import eval_step, train_step

DRIVERS = ("jit", "pmap")


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           local_device_ids: Optional[Sequence[int]] = None) -> None:
  """`jax.distributed.initialize` from explicit values, or with none of them where JAX detects the
  cluster itself (SLURM, Open MPI, a TPU pod). CPU collectives go through gloo (the setting
  touches only the CPU backend; it must be made before any backend starts, so it is made always)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)


def device_count(parallel_config: Mapping[str, Any]) -> int:
  """The number of devices the run uses: `num_devices`, or every device when 0."""
  return parallel_config["num_devices"] or jax.device_count()


def _fsdp_spec(path: str, shape: Sequence[int], rules: Sequence[str], fsdp: int) -> P:
  """Splits the largest dimension divisible by `fsdp` of an array whose path matches a rule."""
  if fsdp == 1 or not any(re.search(rule, path) for rule in rules):
    return P()
  divisible = [d for d in range(len(shape)) if shape[d] % fsdp == 0 and shape[d] >= fsdp]
  if not divisible:
    return P()
  dim = max(divisible, key=lambda d: shape[d])
  return P(*([None] * dim), "fsdp")


def _traced_in(mesh: jax.sharding.Mesh, fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` traced with `mesh` as the abstract mesh, so that code inside it can split work per
  device with `jax.shard_map` (the contrastive losses' layouts: `mmjax/tasks/contrastive.py`)."""
  def traced(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)
  return traced


@dataclasses.dataclass(frozen=True)
class Driver:
  """What the trainer needs from a driver: compiled steps and where arrays go."""
  mesh: jax.sharding.Mesh
  state_sharding: Any
  batch_sharding: NamedSharding
  replicated: NamedSharding
  train: Callable[..., Any]           # (state, global batch, rng) -> (state, metrics)
  evaluate: Callable[..., Any]        # (state, global batch) -> metric sums and values

  def put_batch(self, local_batch: Mapping[str, np.ndarray]) -> Mapping[str, jax.Array]:
    """This process's rows -> global arrays split over the mesh."""
    processes = jax.process_count()
    return {key: jax.make_array_from_process_local_data(
        self.batch_sharding, value, (value.shape[0] * processes, *value.shape[1:]))
            for key, value in local_batch.items()}


def make_driver(parallel_config: Mapping[str, Any], abstract_state: Any, *, tasks, schedule,
                weighting: Any = Fixed(), shared_weight_decay: float = 0.0, frozen: str = "",
                grad_accum_steps: int = 1, ema_decay: float = 0.0,
                modality_dropout: Any = None, balancing: Any = NoBalancing()) -> Driver:
  """The driver named by `parallel_config.driver` over the run's devices, for states shaped like
  `abstract_state`."""
  devices = np.asarray(jax.devices()[:device_count(parallel_config)])
  objective = dict(tasks=tasks, weighting=weighting, shared_weight_decay=shared_weight_decay)
  step = functools.partial(train_step, schedule=schedule, frozen=frozen,
                           grad_accum_steps=grad_accum_steps, ema_decay=ema_decay,
                           modality_dropout=modality_dropout, balancing=balancing, **objective)
  evaluate = functools.partial(eval_step, **objective)
  if parallel_config["driver"] == "jit":
    fsdp = parallel_config["fsdp"]
    mesh = jax.make_mesh((len(devices) // fsdp, fsdp), ("data", "fsdp"),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)
    replicated = NamedSharding(mesh, P())
    rules = tuple(parallel_config["fsdp_rules"])
    state_sharding = jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, _fsdp_spec(jax.tree_util.keystr(path),
                                                          leaf.shape, rules, fsdp)),
        abstract_state)
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    train = jax.jit(_traced_in(mesh, step),
                    in_shardings=(state_sharding, batch_sharding, replicated),
                    out_shardings=(state_sharding, replicated), donate_argnums=0)
    evaluate = jax.jit(_traced_in(mesh, evaluate), in_shardings=(state_sharding, batch_sharding),
                       out_shardings=replicated)
    return Driver(mesh, state_sharding, batch_sharding, replicated, train, evaluate)

  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
  replicated = NamedSharding(mesh, P())
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
  # check_vma=False: the modules' scans (the LSTM) start from carries that are the same on every
  # device and become device-specific, which the varying-axes check rejects; every output is
  # psum-reduced, hence replicated, as out_specs=P() states.
  per_device = lambda fn, in_specs: jax.shard_map(
      functools.partial(fn, axis_name="data"), mesh=mesh, in_specs=in_specs, out_specs=P(),
      check_vma=False)
  train = jax.jit(per_device(step, (P(), P("data"), P())), donate_argnums=0)
  evaluate = jax.jit(per_device(evaluate, (P(), P("data"))))
  return Driver(mesh, state_sharding, NamedSharding(mesh, P("data")), replicated, train, evaluate)
