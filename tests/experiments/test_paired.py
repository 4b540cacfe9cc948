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


def test_claims_compare_and_markdown_against_scipy():
  start = {0: 4.0, 1: 3.0, 2: 5.0}
  rows = {"lightningrl": {0: (60.0, 6.5, 300.0), 1: (55.0, 4.0, 210.0), 2: (63.0, 8.0, 390.0)},
          "grpo": {0: (61.0, 4.5, 250.0), 1: (52.0, 3.3, 190.0), 2: (62.5, 5.2, 300.0)},
          "no_nll": {0: (50.0, 7.0, 280.0)}}  # one seed: too few pairs, left out
  result = {"rows": [{"name": "start", "per_seed": {s: {"accuracy": 50.0, "tpf_gain": 1.0, "aup": 100.0}
                                                      for s in start}}]
            + [{"name": name, "per_seed": {s: {"accuracy": acc, "tpf_gain": tpf / start[s], "aup": a}
                                            for s, (acc, tpf, a) in by.items()}} for name, by in rows.items()]}
  wanted = paired.claims([("lightningrl", "grpo", "gain over GRPO"), ("lightningrl", "no_nll", "nll"),
                          ("lightningrl", "start", "vs start")])
  got = paired.compare(result, wanted)
  assert [(c["a"], c["b"]) for c in got] == [("lightningrl", "grpo"), ("lightningrl", "start")]
  for key, index in (("accuracy", 0), ("aup", 2)):
    d = np.array([rows["lightningrl"][s][index] - rows["grpo"][s][index] for s in start])
    low, high = stats.ttest_rel(d, np.zeros(3)).confidence_interval(0.95)
    assert (got[0][key]["mean"], got[0][key]["low"], got[0][key]["high"]) == pytest.approx((d.mean(), low, high),
                                                                                         rel=1e-9)
  gain = np.array([(rows["lightningrl"][s][1] - rows["grpo"][s][1]) / start[s] for s in start])
  assert got[0]["tpf_gain"]["mean"] == pytest.approx(gain.mean(), rel=1e-12) and got[0]["tpf_gain"]["n"] == 3
  assert got[1]["accuracy"]["mean"] == pytest.approx(np.mean([10.0, 5.0, 13.0]), rel=1e-12)
  text = paired.markdown(got)
  acc = np.mean([rows["lightningrl"][s][0] - rows["grpo"][s][0] for s in start])
  assert f"| lightningrl − grpo | gain over GRPO | 3 | {acc:+.1f} [" in text and "95% Student-t" in text
  assert paired.markdown([]) == ""
  with pytest.raises(ValueError, match=r"paired\[1\]"):
    paired.claims([("a", "b", "ok"), ("a", "b")])
