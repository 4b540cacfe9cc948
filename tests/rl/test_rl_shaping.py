"""Reward shaping, filters and advantages against hand formulas (float64 host math, tolerance 1e-12)."""

import dataclasses

import numpy as np
import pytest

from lrl_jax.data import CodeRecord, MathRecord
from lrl_jax.rl import rollout, shaping

TOL = 1e-12


def _z(x):
  x = np.asarray(x, np.float64)
  return (x - x.mean()) / x.std()  # population std, ddof=0


def test_accuracy_zscore_per_group_with_interleaved_ids():
  group = np.array([7, 3, 7, 3, 7, 3, 7, 3])
  correct = np.array([1, 1, 0, 1, 0, 1, 0, 1], bool)  # group 7: one right of four; group 3: all right
  got = shaping.accuracy_reward(group, correct, acc_norm=True)
  np.testing.assert_allclose(got[group == 7], _z([1, 0, 0, 0]), atol=TOL)
  np.testing.assert_array_equal(got[group == 3], 0.0)
  np.testing.assert_allclose(got[group == 7][0], np.sqrt(3.0), atol=TOL)  # ddof=0: (1-.25)/sqrt(.1875)


def test_accuracy_pass_rate_and_unnormalised():
  group = np.array([0, 0, 0, 1, 1])
  rate = np.array([0.25, 1.0, 0.5, 0.3, 0.3])
  np.testing.assert_allclose(shaping.accuracy_reward(group, rate, True)[:3], _z([0.25, 1.0, 0.5]), atol=TOL)
  np.testing.assert_array_equal(shaping.accuracy_reward(group, rate, True)[3:], 0.0)
  np.testing.assert_array_equal(shaping.accuracy_reward(group, rate, False), rate)
  binary = np.array([True, False, True, False, False])
  np.testing.assert_array_equal(shaping.accuracy_reward(group, binary, False), [1, -1, 1, -1, -1])


def test_unnormalised_accuracy_of_math_and_code_as_the_judge_scores_them():
  """The judge scores every response by a float pass rate; with acc_norm off, math (right or wrong) earns +1 / -1
  and code its pass rate (SPEC §7.3), whatever the batch mixes."""
  data = [MathRecord("q", "1"), MathRecord("q", "2"), CodeRecord("c", "function", test_list=("assert 1",)),
          CodeRecord("c", "function", test_list=("assert 1",))]
  group = np.array([0, 0, 1, 1])
  pass_rate = np.array([1.0, 0.0, 0.25, 0.0])
  cfg = shaping.ShapingConfig(acc_norm=False)
  got = shaping.shape(group, pass_rate, np.array([1.0, 2.0, 1.0, 3.0]), cfg, rollout.graded(data)).acc_reward
  np.testing.assert_array_equal(got, [1.0, -1.0, 0.25, 0.0])
  np.testing.assert_array_equal(rollout.graded(data), [False, False, True, True])


@pytest.mark.parametrize("value", [0.1, 0.7, 2.3, 5.1])
def test_constant_group_gives_exact_zero(value):
  # A naive (x - mean) / std gives +-1 here: the float mean differs from `value` by one ulp.
  group = np.zeros(7, int)
  got = shaping.speed_reward(group, np.full(7, value), "z_score", 1.0)
  np.testing.assert_array_equal(got, 0.0)


def test_speed_reward_modes():
  group = np.array([0, 0, 0, 1, 1])
  tpf = np.array([1.0, 2.0, 4.0, 3.0, 3.0])
  np.testing.assert_allclose(shaping.speed_reward(group, tpf, "z_score", 2.0),
                             np.r_[2 * _z(tpf[:3]), 0.0, 0.0], atol=TOL)
  np.testing.assert_allclose(shaping.speed_reward(group, tpf, "minmax", 0.5),
                             0.5 * np.array([0.0, 1 / 3, 1.0, 0.5, 0.5]), atol=TOL)
  np.testing.assert_allclose(shaping.speed_reward(group, tpf, "none", 0.1), 0.1 * tpf, atol=TOL)
  with pytest.raises(ValueError):
    shaping.speed_reward(group, tpf, "rank", 1.0)


def test_speed_reward_over_correct_responses_only():
  group = np.array([0, 0, 0, 0, 1, 1, 1])
  correct = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0])  # pass rate 0.5 counts as wrong
  tpf = np.array([2.0, 9.0, 4.0, 3.0, 8.0, 5.0, 7.0])
  got = shaping.speed_reward(group, tpf, "z_score", 2.0, correct=correct)
  np.testing.assert_allclose(got, np.r_[2 * _z([2.0, 4.0, 3.0])[:1], 0.0, 2 * _z([2.0, 4.0, 3.0])[1:], 0, 0, 0],
                             atol=TOL)  # group 1 has one correct response: flat, so 0
  got = shaping.speed_reward(group, tpf, "minmax", 1.0, correct=correct)
  np.testing.assert_allclose(got, [0.0, 0.0, 1.0, 0.5, 0.0, 0.5, 0.0], atol=TOL)
  cfg = shaping.ShapingConfig(speed_reward_correct_only=True)
  np.testing.assert_allclose(shaping.shape(group, correct, tpf, cfg).speed_reward,
                             shaping.speed_reward(group, tpf, "z_score", 1.0, correct=correct), atol=TOL)


def test_filters_and_counts():
  group = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
  correct = np.array([0.0, 0.5, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # pass rates; 0.5 is wrong
  tpf = np.array([1.0, 3.0, 2.0, 2.005, 1.0, 2.0, 2.0, 2.0, 1.0, 1.5])
  keep, counts = shaping.filter_groups(group, correct, tpf, True, 0.01)
  # group 0 all wrong, group 1 flat TPF (spread .005), group 3 both (counted as all wrong).
  np.testing.assert_array_equal(keep, np.isin(group, [2, 4]))
  assert counts == {"groups": 5, "kept": 2, "dropped_all_wrong": 2, "dropped_tpf": 1}
  keep, counts = shaping.filter_groups(group, correct, tpf, False, 0.0)
  assert keep.all() and counts["kept"] == 5
  keep, counts = shaping.filter_groups(group, correct, tpf, False, 0.01)
  np.testing.assert_array_equal(keep, ~np.isin(group, [1, 3]))
  assert counts["dropped_tpf"] == 2 and counts["dropped_all_wrong"] == 0


def test_advantages_over_kept_only():
  group = np.array([0, 0, 0, 1, 1, 2, 2])
  reward = np.array([1.0, -1.0, 3.0, 0.5, 2.0, 10.0, -10.0])
  keep = group != 2
  batch = shaping.advantages(group, reward, keep, "batch")
  np.testing.assert_allclose(batch[keep], _z(reward[keep]), atol=TOL)
  np.testing.assert_array_equal(batch[~keep], 0.0)
  per_group = shaping.advantages(group, reward, keep, "prompt_group")
  np.testing.assert_allclose(per_group[:5], np.r_[_z(reward[:3]), _z(reward[3:5])], atol=TOL)
  center = shaping.advantages(group, reward, keep, "prompt_group_center")
  np.testing.assert_allclose(center[:5], [0.0, -2.0, 2.0, -0.75, 0.75], atol=TOL)
  np.testing.assert_array_equal(shaping.advantages(group, np.full(7, 0.3), keep, "batch"), 0.0)
  np.testing.assert_array_equal(shaping.advantages(group, reward, np.zeros(7, bool), "batch"), 0.0)


def test_shape_is_decoupled_sum_and_metrics():
  group = np.repeat(np.arange(3), 4)
  correct = np.array([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
  tpf = np.array([1.0, 2.0, 3.0, 6.0, 1.0, 1.5, 2.5, 2.0, 4.0, 1.0, 2.0, 3.0])
  out = shaping.shape(group, correct, tpf, shaping.ShapingConfig())
  acc = np.r_[_z([1, 0, 0, 1]), np.zeros(8)]
  speed = np.concatenate([_z(tpf[g * 4:g * 4 + 4]) for g in range(3)])
  np.testing.assert_allclose(out.acc_reward, acc, atol=TOL)
  np.testing.assert_allclose(out.speed_reward, speed, atol=TOL)
  np.testing.assert_allclose(out.reward, acc + speed, atol=TOL)
  np.testing.assert_array_equal(out.keep, group < 2)
  np.testing.assert_allclose(out.advantages[:8], _z((acc + speed)[:8]), atol=TOL)
  got = shaping.metrics(out, correct, tpf)
  want = {"reward_mean": np.mean(acc + speed), "reward_std": np.std(acc + speed), "acc_reward_mean": 0.0,
          "speed_reward_mean": 0.0, "correct_ratio": 6 / 12, "kept_group_frac": 2 / 3, "tpf_mean": np.mean(tpf)}
  assert got.keys() == want.keys()
  for key, value in want.items():
    assert got[key] == pytest.approx(value, abs=TOL), key


def test_algorithm_settings():
  assert shaping.for_algorithm("lightningrl") == shaping.ShapingConfig()
  grpo = shaping.for_algorithm("grpo")
  assert (grpo.tpf_coefficient, grpo.filter_tpf_threshold, grpo.adv_norm_mode, grpo.logp_mode) == (
      0.0, 0.0, "prompt_group", "block_masked")
  assert shaping.for_algorithm("grpo_traj") == dataclasses.replace(grpo, logp_mode="trajectory")
  group = np.array([0, 0, 1, 1])
  correct = np.array([True, False, True, False])
  tpf = np.array([2.0, 2.0, 1.0, 5.0])  # group 0 has flat TPF: grpo keeps it and ignores speed
  out = shaping.shape(group, correct, tpf, grpo)
  assert out.keep.all()
  np.testing.assert_array_equal(out.speed_reward, 0.0)
  np.testing.assert_allclose(out.advantages, [1.0, -1.0, 1.0, -1.0], atol=TOL)
  with pytest.raises(ValueError):
    shaping.for_algorithm("ppo")
  with pytest.raises(ValueError):
    shaping.ShapingConfig(adv_norm_mode="global")


def test_joint_normalisation_is_one_zscore_of_correct_plus_tpf():
  group = np.repeat(np.arange(3), 4)
  correct = np.array([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
  tpf = np.array([1.0, 2.0, 3.0, 6.0, 1.0, 1.5, 2.5, 2.0, 4.0, 1.0, 2.0, 3.0])
  cfg = shaping.ShapingConfig(reward_norm="joint", tpf_coefficient=0.5)
  out = shaping.shape(group, correct, tpf, cfg)
  summed = correct + 0.5 * tpf
  want = np.concatenate([_z(summed[g * 4:g * 4 + 4]) for g in range(3)])
  np.testing.assert_allclose(out.reward, want, atol=TOL)
  np.testing.assert_allclose(out.acc_reward, correct.astype(float), atol=TOL)
  np.testing.assert_allclose(out.speed_reward, 0.5 * tpf, atol=TOL)
  # group 0 by hand: summed [1.5, 1, 1.5, 4], mean 2, population std sqrt(1.375)
  np.testing.assert_allclose(out.reward[:4], (np.array([1.5, 1.0, 1.5, 4.0]) - 2.0) / np.sqrt(1.375), atol=TOL)
  np.testing.assert_array_equal(out.keep, group < 2)  # the filters are unchanged
  np.testing.assert_allclose(out.advantages[:8], _z(want[:8]), atol=TOL)
  # decoupled differs: the joint sum lets TPF outweigh correctness (response 2 wrong but above response 0)
  assert out.reward[2] == out.reward[0] and shaping.shape(group, correct, tpf, shaping.ShapingConfig()).reward[2] < \
      shaping.shape(group, correct, tpf, shaping.ShapingConfig()).reward[0]


def test_joint_normalisation_correct_only_and_pass_rates():
  group = np.array([0, 0, 0, 1, 1])
  rate = np.array([1.0, 0.5, 0.0, 1.0, 1.0])
  tpf = np.array([2.0, 8.0, 4.0, 3.0, 3.0])
  acc, speed, reward = shaping.joint_reward(group, rate, tpf, 1.0, correct_only=True)
  np.testing.assert_allclose(speed, [2.0, 0.0, 0.0, 3.0, 3.0], atol=TOL)  # 0.5 is not correct
  np.testing.assert_allclose(reward, np.r_[_z([3.0, 0.5, 0.0]), 0.0, 0.0], atol=TOL)
  np.testing.assert_allclose(acc, rate, atol=TOL)
  with pytest.raises(ValueError):
    shaping.ShapingConfig(reward_norm="summed")
