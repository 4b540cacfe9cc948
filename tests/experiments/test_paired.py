"""Paired differences with a Student-t interval, against scipy.stats on fixed numbers (1e-9 relative)."""

import numpy as np
import pytest
from scipy import stats

from lrl_jax.experiments import paired


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 9, 30])
def test_t_quantile_and_mass_match_scipy(df):
  for conf in (0.5, 0.9, 0.95, 0.99):
    assert paired.t_quantile(conf, df) == pytest.approx(stats.t.ppf(0.5 + conf / 2, df), rel=1e-9)
  for t in (0.1, 1.0, 2.5, 7.0):
    assert paired.t_central_mass(t, df) == pytest.approx(stats.t.cdf(t, df) - stats.t.cdf(-t, df), rel=1e-9)


def test_paired_difference_matches_scipy_interval():
  a = [64.1, 55.9, 67.2, 70.3, 61.0]
  b = [66.0, 58.7, 66.1, 75.2, 63.9]
  got = paired.paired_difference(a, b)
  d = np.subtract(b, a)
  low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
  assert got.mean == pytest.approx(2.28, rel=1e-9) and got.n == 5
  assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)
  assert got.std == pytest.approx(np.std(d, ddof=1), rel=1e-12)
  res = stats.ttest_rel(b, a).confidence_interval(0.95)
  assert (got.low, got.high) == pytest.approx((res.low, res.high), rel=1e-9)


def test_paired_rows_pair_by_seed_and_bad_input_fails():
  result = {"rows": [{"name": "start", "per_seed": {0: {"tpf": 4.0}, 1: {"tpf": 3.0}, 2: {"tpf": 5.0}}},
                     {"name": "lightningrl", "per_seed": {2: {"tpf": 8.0}, 0: {"tpf": 6.5}, 1: {"tpf": 4.0}}}]}
  got = paired.paired_rows(result, "start", "lightningrl", "tpf")
  assert got.n == 3 and got.mean == pytest.approx((2.5 + 1.0 + 3.0) / 3, rel=1e-12)
  with pytest.raises(KeyError):
    paired.paired_rows(result, "start", "grpo", "tpf")
  with pytest.raises(ValueError):
    paired.paired_difference([1.0], [2.0])
  with pytest.raises(ValueError):
    paired.t_central_mass(1.0, 0)
