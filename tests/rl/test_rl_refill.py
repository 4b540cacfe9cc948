"""resample_filtered: the accept-reject refill of filtered groups against hand-computed rounds (numpy)."""

import numpy as np

from lrl_jax.rl import refill, shaping

CFG = shaping.ShapingConfig()  # filter_all_wrong, TPF spread >= 0.01


def _round(correct, tpf, tag):
  """A judged round of len(correct) groups × 2 responses; records name (tag, group, member)."""
  correct, tpf = np.asarray(correct, bool).reshape(-1), np.asarray(tpf, float).reshape(-1)
  group = np.repeat(np.arange(len(correct) // 2), 2)
  return refill.Round(group, [(tag, int(g), i % 2) for i, g in enumerate(group)], [tag] * len(group), correct, tpf)


PASS, ALL_WRONG, FLAT = ([1, 0], [3.0, 2.0]), ([0, 0], [2.0, 3.0]), ([1, 1], [2.0, 2.0])


def _groups(*kinds):
  return [x for k in kinds for x in k[0]], [x for k in kinds for x in k[1]]


def test_refills_missing_groups_round_by_round():
  first = _round(*_groups(PASS, ALL_WRONG, FLAT, PASS), "r0")  # 2 of 4 pass
  extra = {1: _round(*_groups(FLAT, PASS), "r1"), 2: _round(*_groups(PASS), "r2")}
  calls = []

  def roll(r, n):
    calls.append((r, n))
    return extra[r]

  merged, rounds = refill.refill(first, roll, CFG, num_prompts=4)
  assert calls == [(1, 2), (2, 1)] and rounds == 2  # 2 missing, then 1 (round 1 kept one of its two)
  np.testing.assert_array_equal(merged.group, np.repeat(np.arange(7), 2))
  assert merged.records[8] == ("r1", 0, 0) and merged.records[12] == ("r2", 0, 0)
  shaped = shaping.shape(merged.group, merged.correct, merged.tpf, CFG)
  assert shaped.counts["kept"] == 4
  np.testing.assert_array_equal(shaped.keep, np.isin(merged.group, [0, 3, 5, 6]))
  # advantages: batch z-score over the kept responses, whose rewards are +-(1 + 1) in every kept group (the right one is faster)
  np.testing.assert_allclose(shaped.advantages[shaped.keep], np.tile([1.0, -1.0], 4), atol=1e-12)


def test_no_round_when_nothing_is_filtered_and_rounds_are_bounded():
  first = _round(*_groups(PASS, PASS), "r0")
  merged, rounds = refill.refill(first, lambda r, n: 1 / 0, CFG, num_prompts=2)
  assert rounds == 0 and merged.records == first.records
  calls = []

  def roll(r, n):
    calls.append((r, n))
    return _round(*_groups(*[ALL_WRONG] * n), f"r{r}")

  merged, rounds = refill.refill(_round(*_groups(ALL_WRONG, PASS, FLAT), "r0"), roll, CFG, num_prompts=3,
                                 max_rounds=2)
  assert calls == [(1, 2), (2, 2)] and rounds == 2 and len(merged.group) == 2 * (3 + 2 + 2)
  assert shaping.shape(merged.group, merged.correct, merged.tpf, CFG).counts["kept"] == 1


def test_round_seeds():
  assert refill.rollout_seed(3, 7, 0) == 3 * 1_000_003 + 7  # round 0: the trainer's seed, unchanged
  seeds = {refill.rollout_seed(s, k, r) for s in range(3) for k in range(50) for r in range(1, 4)}
  assert len(seeds) == 3 * 50 * 3 and all(0 <= x < 2**31 for x in seeds)
  assert refill.rollout_seed(1, 2, 3) == refill.rollout_seed(1, 2, 3)
