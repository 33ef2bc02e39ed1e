"""`retrieval`: cross-modal retrieval over a whole split, exact, in both directions.

For a contrastive task with normalised embeddings a_i, b_i of the split's N real examples
(gathered from every batch, device and process), query a_i ranks every b_j by s_ij = a_i·b_j,
and its positive is b_i. Its rank counts ties against the model:

    rank_i = 1 + #{j ≠ i : s_ij ≥ s_ii}

so a collapsed model (every embedding equal) ranks every positive last, not first, and ranks do
not depend on the order of the examples (hence on how they were spread over devices or
processes). Reported, for `a_to_b` (queries a, candidates b) and `b_to_a`: `R@k` = the fraction
of queries with rank_i ≤ k for each k of `ks`, `median_rank` and `mean_rank`, and `examples` = N.
(The per-batch R@k of the contrastive task's metrics rank among one eval batch only and count
ties in the model's favour; these are the whole split's.)

Memory: the similarities are computed in `chunk` × `chunk` blocks (a query block against each
candidate block in turn, keeping only counts), so the N × N matrix is never held: beyond the two
(N, E) embedding arrays, a block of chunk² floats. N = 100,000 with E = 64 needs 2 × 25.6 MB of
embeddings and a 4 MB block (`experiments/bench_retrieval.py` measures it).
"""
import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError
from mmjax.evaluators.context import Context, gather
from mmjax.tasks import kinds


def _block_similarity(queries: jax.Array, candidates: jax.Array) -> jax.Array:
  return jnp.dot(queries, candidates.T, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnums=2)
def _ranks(queries: jax.Array, candidates: jax.Array, count: int) -> jax.Array:
  """Ranks of `(blocks, chunk, E)` queries against candidates of the same shape, `count` real."""
  blocks, chunk, _ = queries.shape
  offsets = jnp.arange(chunk)

  def rank_block(index):
    block = queries[index]
    positive = jnp.diagonal(_block_similarity(block, candidates[index]))[:, None]
    rows = index * chunk + offsets

    def add(j, counts):
      columns = j * chunk + offsets
      counted = ((_block_similarity(block, candidates[j]) >= positive)
                 & (columns < count)[None, :] & (columns[None, :] != rows[:, None]))
      return counts + counted.sum(axis=1, dtype=jnp.int32)

    return 1 + jax.lax.fori_loop(0, blocks, add, jnp.zeros(chunk, jnp.int32))

  return jax.lax.map(rank_block, jnp.arange(blocks)).reshape(-1)


def ranks(queries: np.ndarray, candidates: np.ndarray, chunk: int = 1024) -> np.ndarray:
  """`rank_i = 1 + #{j ≠ i : q_i·c_j ≥ q_i·c_i}` for every query (module docstring), in float32,
  chunk × chunk similarities at a time. The positive's similarity comes from the same blocked
  product as every other (its diagonal block), so an exact tie is a tie."""
  count, width = queries.shape
  chunk = max(1, min(chunk, count))
  blocks = -(-count // chunk)
  pad = lambda x: jnp.pad(jnp.asarray(x, jnp.float32), ((0, blocks * chunk - count), (0, 0)))
  queries, candidates = (pad(x).reshape(blocks, chunk, width) for x in (queries, candidates))
  return np.asarray(_ranks(queries, candidates, count))[:count]


def rank_metrics(rank: np.ndarray, ks: Sequence[int]) -> Dict[str, float]:
  """`R@k` (fraction of ranks ≤ k), `median_rank` and `mean_rank` of 1-based ranks."""
  metrics = {f"R@{k}": float(np.mean(rank <= k)) for k in ks}
  metrics.update(median_rank=float(np.median(rank)), mean_rank=float(np.mean(rank)))
  return metrics


def retrieval_metrics(a: np.ndarray, b: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                      chunk: int = 1024) -> Dict[str, float]:
  """`{"a_to_b/R@k", ..., "b_to_a/...", "examples"}` for paired embeddings `a`, `b` (N, E)."""
  metrics = {"examples": len(a)}
  for direction, queries, candidates in (("a_to_b", a, b), ("b_to_a", b, a)):
    metrics.update({f"{direction}/{name}": value for name, value in
                    rank_metrics(ranks(queries, candidates, chunk), ks).items()})
  return metrics


def contrastive_task(tasks: Dict[str, Any], task: Optional[str], evaluator: str) -> str:
  """`task`, or the only contrastive task when None; ConfigError when that is not one."""
  contrastive = [name for name, kind in tasks.items() if isinstance(kind, kinds.Contrastive)]
  if task is None and len(contrastive) == 1:
    return contrastive[0]
  if task not in contrastive:
    raise ConfigError(f"the {evaluator} evaluator's task={task!r} is not a contrastive task; "
                      f"set it to one of {contrastive}" if contrastive else
                      f"the {evaluator} evaluator needs a contrastive task; the tasks are "
                      f"{sorted(tasks)}")
  return task


def _embeddings(apply_fn, params, batch, task: str) -> Dict[str, jax.Array]:
  outputs = apply_fn({"params": params}, batch, train=False)[task]
  return {"a": outputs["a"], "b": outputs["b"]}


@dataclasses.dataclass(frozen=True)
class Retrieval:
  split: str = "test"
  every_steps: int = 0          # 0: only at the end of training
  task: Optional[str] = None    # the contrastive task (None: the only one)
  ks: Tuple[int, ...] = (1, 5, 10)
  chunk: int = 1024             # similarities computed chunk × chunk at a time

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del config
    contrastive_task(tasks, self.task, "retrieval")
    if self.chunk < 1 or not self.ks or min(self.ks) < 1:
      raise ConfigError(f"the retrieval evaluator needs chunk ≥ 1 and ks ≥ 1 (got chunk="
                        f"{self.chunk}, ks={tuple(self.ks)})")

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    del tasks
    names = [f"{d}/{m}" for d in ("a_to_b", "b_to_a")
             for m in (*(f"R@{k}" for k in self.ks), "median_rank", "mean_rank")]
    return None if metric in names else f"its metrics are {', '.join(names)}"

  def run(self, context: Context, state: Any) -> Dict[str, float]:
    task = contrastive_task(context.tasks, self.task, "retrieval")
    found = gather(context, state, self.split, _embeddings, (task,))
    return retrieval_metrics(found["a"], found["b"], self.ks, self.chunk)
