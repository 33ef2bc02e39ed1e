"""Statistics that answer "does it differ?" for results over seeds and over test examples.

- `t_interval`: the confidence interval of a mean over n seeds, mean ± t_{(1+c)/2, n−1}·s/√n
  with s the sample standard deviation (Student's t; n ≥ 2).
- `paired_bootstrap`: two methods scored on the same test examples (per-example scores, e.g.
  1/0 correctness from `mmjax predict`): the difference of their means, its percentile bootstrap
  interval over resampled examples (the same resampled rows for both, so that what the examples
  share cancels: Efron & Tibshirani 1993, ch. 13), and the two-sided p-value
  2·min(P*(d ≤ 0), P*(d ≥ 0)) of the bootstrap distribution of the difference d.
- `versus_reference`: whether our seeds' mean differs from a published number: a one-sample t-test
  against it when the paper gives a point, Welch's t-test when it gives a mean ± std over its own
  n runs (Welch–Satterthwaite degrees of freedom).
"""
import math
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

from mmjax.errors import DataError


def _values(values: Sequence[float], name: str, at_least: int) -> np.ndarray:
  array = np.asarray(values, np.float64).ravel()
  if array.size < at_least or not np.all(np.isfinite(array)):
    raise DataError(f"{name} needs at least {at_least} finite values; got {array.tolist()}")
  return array


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
  """`{"mean", "low", "high", "n"}`: the t-interval of the mean of `values` (module docstring)."""
  x = _values(values, "a t-interval", 2)
  half = (scipy_stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1)
          / math.sqrt(x.size))
  return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half),
          "n": int(x.size)}


def paired_bootstrap(scores_a: Sequence[float], scores_b: Sequence[float], samples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> Dict[str, float]:
  """`{"difference", "low", "high", "p_value", "n"}` of mean(a) − mean(b) over the same examples
  (module docstring), from `samples` bootstrap resamples drawn with `seed`."""
  a, b = _values(scores_a, "a paired bootstrap", 2), _values(scores_b, "a paired bootstrap", 2)
  if a.size != b.size:
    raise DataError(f"a paired bootstrap scores both methods on the same examples; got {a.size} "
                    f"and {b.size} scores")
  differences = a - b
  rows = np.random.default_rng(seed).integers(0, a.size, size=(samples, a.size))
  resampled = differences[rows].mean(axis=1)
  tail = (1 - confidence) / 2
  low, high = np.quantile(resampled, [tail, 1 - tail])
  p_value = min(1.0, 2 * min(np.mean(resampled <= 0), np.mean(resampled >= 0)))
  return {"difference": float(differences.mean()), "low": float(low), "high": float(high),
          "p_value": float(p_value), "n": int(a.size)}


def versus_reference(values: Sequence[float], reference: float,
                     reference_std: Optional[float] = None, reference_n: Optional[int] = None
                     ) -> Dict[str, float]:
  """`{"difference", "t", "dof", "p_value"}`: mean(values) − reference and the two-sided t-test
  of it (module docstring); `reference_std` and `reference_n` give the paper's spread."""
  x = _values(values, "a test against a reference", 2)
  variance = x.var(ddof=1) / x.size
  dof = x.size - 1.0
  if reference_std is not None:
    if not reference_n or reference_n < 2:
      raise DataError("a reference's std needs the number of runs it is over (reference_n ≥ 2)")
    other = reference_std ** 2 / reference_n
    dof = (variance + other) ** 2 / (variance ** 2 / (x.size - 1) + other ** 2 / (reference_n - 1))
    variance += other
  difference = float(x.mean() - reference)
  if variance == 0:
    return {"difference": difference, "t": math.copysign(math.inf, difference) if difference
            else 0.0, "dof": dof, "p_value": 0.0 if difference else 1.0}
  t = difference / math.sqrt(variance)
  return {"difference": difference, "t": t, "dof": dof,
          "p_value": float(2 * scipy_stats.t.sf(abs(t), dof))}
