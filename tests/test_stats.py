"""`mmjax/stats.py` against scipy on fixed inputs: the t-interval against `scipy.stats.t.interval`,
the reference tests against `ttest_1samp` and `ttest_ind_from_stats` (Welch), and the paired
bootstrap's interval against `scipy.stats.bootstrap(paired=True, method="percentile")` (both Monte
Carlo: within 0.005 with 20,000 resamples of 400 examples)."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmjax import stats
from mmjax.errors import DataError

SEEDS = [0.905, 0.912, 0.897]


def test_the_t_interval_is_scipys():
  """n = 3 seeds: t_{0.975, 2} = 4.303 (bug caught: the normal quantile 1.96, or s with
  ddof = 0, either of which narrows it)."""
  found = stats.t_interval(SEEDS)
  low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(SEEDS), scale=scipy_stats.sem(SEEDS))
  assert (found["low"], found["high"]) == pytest.approx((low, high), abs=1e-12)
  assert found["n"] == 3 and found["mean"] == pytest.approx(np.mean(SEEDS))


def test_a_point_reference_is_a_one_sample_t_test():
  found = stats.versus_reference(SEEDS, 0.88)
  expected = scipy_stats.ttest_1samp(SEEDS, 0.88)
  assert (found["t"], found["p_value"]) == pytest.approx((expected.statistic, expected.pvalue),
                                                         rel=1e-10)
  assert found["difference"] == pytest.approx(np.mean(SEEDS) - 0.88)


def test_a_reference_with_its_spread_is_welchs_t_test():
  """The paper's 0.89 ± 0.02 over 5 runs (bug caught: pooling the variances, Student's test)."""
  found = stats.versus_reference(SEEDS, 0.89, reference_std=0.02, reference_n=5)
  expected = scipy_stats.ttest_ind_from_stats(np.mean(SEEDS), np.std(SEEDS, ddof=1), 3, 0.89,
                                              0.02, 5, equal_var=False)
  assert (found["t"], found["p_value"]) == pytest.approx((expected.statistic, expected.pvalue),
                                                         rel=1e-10)


def test_the_paired_bootstrap_interval_is_scipys_and_its_p_value_tracks_the_gap():
  """Two classifiers' 1/0 correctness on 400 shared examples whose errors overlap: the paired
  interval matches scipy's and is narrower than an unpaired one would be (bug caught: resampling
  the two methods' examples independently); no gap gives p = 1, a large one p ≈ 0."""
  rng = np.random.default_rng(0)
  hard = rng.random(400) < 0.3
  a = (~hard | (rng.random(400) < 0.5)).astype(float)
  b = (~hard | (rng.random(400) < 0.3)).astype(float)
  found = stats.paired_bootstrap(a, b, samples=20000)
  expected = scipy_stats.bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y), paired=True,
                                   n_resamples=20000, method="percentile", vectorized=False,
                                   random_state=1).confidence_interval
  assert (found["low"], found["high"]) == pytest.approx((expected.low, expected.high), abs=0.005)
  assert found["difference"] == pytest.approx(a.mean() - b.mean())
  unpaired = [rng.choice(a, 400).mean() - rng.choice(b, 400).mean() for _ in range(4000)]
  assert found["high"] - found["low"] < 0.8 * np.subtract(*np.quantile(unpaired, [0.975, 0.025]))
  assert stats.paired_bootstrap(a, a)["p_value"] == 1.0
  assert stats.paired_bootstrap(np.ones(400), b)["p_value"] < 1e-3


@pytest.mark.parametrize("call,message", [
    (lambda: stats.t_interval([0.9]), "at least 2 finite values"),
    (lambda: stats.paired_bootstrap([1, 0, 1], [1, 0]), "same examples; got 3 and 2"),
    (lambda: stats.versus_reference(SEEDS, 0.9, reference_std=0.01), "reference_n ≥ 2")])
def test_bad_inputs_are_one_line_errors(call, message):
  with pytest.raises(DataError, match=message):
    call()
