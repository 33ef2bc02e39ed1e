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
PID paper's code does with cvxpy's `rel_entr`.
"""
import dataclasses
import math
from typing import Dict

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
