"""Partial information decomposition (PID) of what two modalities X1, X2 say about a label Y,
in bits: redundancy R, uniqueness U1 and U2, and synergy S (Williams & Beer 2010), with the BROJA
definition (Bertschinger, Rauh, Olbrich, Jost, Ay 2014, "Quantifying unique information"), as Liang
et al. (NeurIPS 2023, "Quantifying & modeling multimodal interactions: an information
decomposition framework") apply it to multimodal data.

Given p(x1, x2, y), let Δ_p be the distributions q with q(x1, y) = p(x1, y) and
q(x2, y) = p(x2, y), and

    q* = argmax_{q ∈ Δ_p} H_q(Y | X1, X2)        (equivalently argmin I_q(X1, X2; Y)),

a convex program: H_q(Y | X1, X2) = −Σ q(x1, x2, y) log(q(x1, x2, y) / q(x1, x2)) is concave in q
(a sum of negated relative entropies of q and its linear marginal), and the constraints are
linear. Then

    U1 = I_q*(X1; Y | X2),   U2 = I_q*(X2; Y | X1),
    R  = I_p(X1; Y) − U1,    S  = I_p(X1, X2; Y) − I_q*(X1, X2; Y),

which satisfy R + U1 = I(X1; Y), R + U2 = I(X2; Y), U1 + S = I(X1; Y | X2),
U2 + S = I(X2; Y | X1) and R + U1 + U2 + S = I(X1, X2; Y) (the marginals fix I(Xi; Y), and
I_q*(X1; Y) = I_p(X1; Y)). The program is solved with cvxpy's exponential-cone interior-point
solver Clarabel (installed with cvxpy from the package index; `solver` picks another), as the
PID paper's code does with cvxpy's `rel_entr` (in nats there; bits here). The identities above
hold at every q with p's two marginals, so a solution cvxpy flags as inaccurate (Clarabel stopped
at reduced accuracy, on large sparse tables) keeps them; only the split of I(X1, X2; Y) between
synergy and the rest may be off by the solver's gap.

Continuous, high-dimensional modalities (`clustered_pid`, the PID paper's first estimator): each
modality's features are clustered by k-means (Lloyd's iterations in JAX from k-means++ starts)
and the discrete PID is taken of the empirical table p(c1, c2, y) of the two cluster indices and
the label. Its plug-in mutual informations are biased upwards by about (cells − 1)/(2N ln 2) bits
with N examples (Miller 1955), so keep N well above the number of cells
`clusters² · classes`.
"""
import dataclasses
import functools
import math
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import DataError

BITS = 1.0 / math.log(2.0)


@dataclasses.dataclass(frozen=True)
class PID:
  """The four PID terms (bits) and the mutual informations they decompose."""
  redundancy: float
  unique_1: float
  unique_2: float
  synergy: float
  mi_1: float        # I(X1; Y)
  mi_2: float        # I(X2; Y)
  mi_joint: float    # I(X1, X2; Y)

  def as_dict(self) -> Dict[str, float]:
    return dataclasses.asdict(self)


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-(p * np.log(p)).sum() * BITS)


def mutual_informations(p: np.ndarray) -> Dict[str, float]:
  """I(X1; Y), I(X2; Y), I(X1, X2; Y), I(X1; Y | X2), I(X2; Y | X1) in bits, of `p[x1, x2, y]`."""
  h = lambda *axes: _entropy(p.sum(axis=tuple(a for a in range(3) if a not in axes)).ravel())
  joint = h(0, 1) + h(2) - h(0, 1, 2)
  return {"mi_1": h(0) + h(2) - h(0, 2), "mi_2": h(1) + h(2) - h(1, 2), "mi_joint": joint,
          "conditional_1": h(0, 1) + h(1, 2) - h(0, 1, 2) - h(1),
          "conditional_2": h(0, 1) + h(0, 2) - h(0, 1, 2) - h(0)}


def _checked(p: np.ndarray) -> np.ndarray:
  p = np.asarray(p, np.float64)
  if p.ndim != 3 or 0 in p.shape:
    raise DataError(f"a PID takes a joint table p[x1, x2, y] with three non-empty axes; got shape "
                    f"{p.shape}")
  if not np.all(np.isfinite(p)) or np.any(p < 0) or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
    raise DataError(f"the joint table p[x1, x2, y] must be finite, non-negative and sum to 1; it "
                    f"sums to {p.sum():.6g} with minimum {p.min():.3g}: normalise the counts")
  return p / p.sum()


def broja_optimum(p: np.ndarray, solver: str = "CLARABEL") -> np.ndarray:
  """q*[x1, x2, y]: the distribution with p's (x1, y) and (x2, y) marginals of largest
  H(Y | X1, X2). Only the (x1, x2, y) cells where both marginals are positive can be non-zero."""
  import cvxpy as cp   # imported here: only the PID needs the solver

  p = _checked(p)
  n1, n2, ny = p.shape
  p1y, p2y = p.sum(axis=1), p.sum(axis=0)
  support = np.argwhere((p1y[:, None, :] > 0) & (p2y[None, :, :] > 0))   # (cells, 3)
  q = cp.Variable(len(support), nonneg=True)
  # 0/1 matrices: each cell to its (x1, y) entry, its (x2, y) entry and its (x1, x2) entry.
  def incidence(keys, size):
    matrix = np.zeros((size, len(support)))
    matrix[keys, np.arange(len(support))] = 1.0
    return matrix
  to_1y = incidence(support[:, 0] * ny + support[:, 2], n1 * ny)
  to_2y = incidence(support[:, 1] * ny + support[:, 2], n2 * ny)
  to_12 = incidence(support[:, 0] * n2 + support[:, 1], n1 * n2)
  marginal_12 = to_12.T @ (to_12 @ q)   # q(x1, x2) at each cell
  problem = cp.Problem(cp.Maximize(-cp.sum(cp.rel_entr(q, marginal_12))),
                       [to_1y @ q == p1y.ravel(), to_2y @ q == p2y.ravel()])
  problem.solve(solver=solver)
  if problem.status not in ("optimal", "optimal_inaccurate"):
    raise RuntimeError(f"the BROJA program did not solve ({problem.status}) with {solver}")
  optimum = np.zeros_like(p)
  optimum[tuple(support.T)] = np.clip(q.value, 0.0, None)
  return optimum / optimum.sum()


def pid(p: np.ndarray, solver: str = "CLARABEL") -> PID:
  """The BROJA PID (bits) of the joint table `p[x1, x2, y]` (any sizes; it must sum to 1)."""
  p = _checked(p)
  found = mutual_informations(p)
  optimum = mutual_informations(broja_optimum(p, solver))
  unique_1 = max(optimum["conditional_1"], 0.0)
  unique_2 = max(optimum["conditional_2"], 0.0)
  return PID(redundancy=found["mi_1"] - unique_1, unique_1=unique_1, unique_2=unique_2,
             synergy=found["mi_joint"] - optimum["mi_joint"], mi_1=found["mi_1"],
             mi_2=found["mi_2"], mi_joint=found["mi_joint"])


@functools.partial(jax.jit, static_argnames="iterations")
def _lloyd(x: jax.Array, centroids: jax.Array, iterations: int = 100
           ) -> Tuple[jax.Array, jax.Array]:
  """(centroids, assignment) after Lloyd's iterations; a cluster left empty keeps its centroid."""
  def assign(centroids):
    distances = (jnp.sum(x ** 2, 1)[:, None] - 2 * x @ centroids.T
                 + jnp.sum(centroids ** 2, 1)[None, :])
    return jnp.argmin(distances, axis=1)

  def step(centroids, _):
    members = jax.nn.one_hot(assign(centroids), centroids.shape[0], dtype=x.dtype)
    counts = members.sum(0)[:, None]
    moved = (members.T @ x) / jnp.maximum(counts, 1)
    return jnp.where(counts > 0, moved, centroids), None

  centroids, _ = jax.lax.scan(step, centroids, None, length=iterations)
  return centroids, assign(centroids)


def _kmeans_plus_plus(x: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
  """Starting centres: each next one drawn with probability ∝ the squared distance to the nearest
  chosen one (Arthur & Vassilvitskii 2007)."""
  chosen = [rng.integers(len(x))]
  nearest = np.sum((x - x[chosen[0]]) ** 2, axis=1)
  for _ in range(clusters - 1):
    chosen.append(rng.choice(len(x), p=nearest / nearest.sum()) if nearest.sum() > 0
                  else rng.integers(len(x)))
    nearest = np.minimum(nearest, np.sum((x - x[chosen[-1]]) ** 2, axis=1))
  return x[chosen]


def kmeans(x: np.ndarray, clusters: int, seed: int = 0, restarts: int = 10,
           iterations: int = 100) -> Tuple[np.ndarray, np.ndarray]:
  """(centroids (k, D), assignment (N,)) of the rows of `x` by k-means: of `restarts` runs of
  `iterations` Lloyd steps, each from a k-means++ start, the one of least within-cluster sum of
  squares (one start often merges two clusters and splits another)."""
  x = np.asarray(x, np.float32).reshape(len(x), -1)
  if not 1 <= clusters <= len(x):
    raise DataError(f"k-means with {clusters} clusters of {len(x)} rows; use 1 to {len(x)}")
  rng = np.random.default_rng(seed)
  best, least = None, np.inf
  for _ in range(restarts):
    centroids, assignment = map(np.asarray, _lloyd(jnp.asarray(x), jnp.asarray(
        _kmeans_plus_plus(x, clusters, rng)), iterations))
    inertia = float(np.sum((x - centroids[assignment]) ** 2))
    if inertia < least:
      best, least = (centroids, assignment), inertia
  return best


def joint_table(x1: np.ndarray, x2: np.ndarray, y: np.ndarray) -> np.ndarray:
  """The empirical p[x1, x2, y] of three integer vectors (N,) (values from 0)."""
  values = [np.asarray(v) for v in (x1, x2, y)]
  for name, v in zip(("x1", "x2", "y"), values):
    if v.ndim != 1 or len(v) != len(values[0]) or not np.issubdtype(v.dtype, np.integer) or (
        v.size and v.min() < 0):
      raise DataError(f"a joint table needs three (N,) vectors of integers ≥ 0 of one length; "
                      f"{name} has shape {v.shape} and dtype {v.dtype}")
  table = np.zeros([int(v.max()) + 1 for v in values])
  np.add.at(table, tuple(values), 1.0)
  return table / len(values[0])


def clustered_pid(features_1: np.ndarray, features_2: np.ndarray, labels: np.ndarray,
                  clusters: int = 20, seed: int = 0, solver: str = "CLARABEL") -> PID:
  """The PID (bits) of integer `labels` (N,) with two modalities' features (N, ...), each
  clustered into `clusters` k-means clusters."""
  ids = [kmeans(f, clusters, seed + i)[1] for i, f in enumerate((features_1, features_2))]
  return pid(joint_table(*ids, labels), solver)
