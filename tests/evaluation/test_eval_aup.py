"""AUP (SPEC §9) against hand-computed examples."""

import itertools
import math

import pytest

from lrl_jax.evaluation.aup import aup, default_y_max, weight


def test_single_point_is_tpf_times_accuracy():
  assert aup([(2.85, 88.9)], y_max=90.3) == pytest.approx(2.85 * 88.9)
  # The first term is unweighted (as SPEC §9 writes it), even far below y_max.
  assert aup([(2.0, 50.0)], y_max=90.0) == pytest.approx(100.0)


def test_point_more_than_five_below_first_is_dropped():
  assert aup([(1.0, 80.0), (2.0, 74.9)], y_max=80.0) == pytest.approx(80.0)
  # Exactly y_1 - 5 is kept: 80 + 1/2 * 1 * (75 W(75) + 80).
  kept = 80.0 + 0.5 * (75.0 * math.exp(-3 * (1 - 75 / 80)) + 80.0)
  assert aup([(1.0, 80.0), (2.0, 75.0)], y_max=80.0) == pytest.approx(kept)


def test_weight_below_y_max_reduces_area():
  points = [(1.0, 50.0), (2.0, 50.0)]
  assert aup(points, y_max=50.0) == pytest.approx(50.0 + 0.5 * 1.0 * (50.0 + 50.0))  # W = 1
  # y_max 100: W(50) = exp(-1.5) = 0.22313016; 50 + 1/2 * (2 * 50 * 0.22313016) = 61.156508.
  assert aup(points, y_max=100.0) == pytest.approx(61.156508, abs=1e-6)


def test_weight_capped_at_one_above_y_max():
  assert weight(90.0, 80.0) == 1.0
  assert aup([(1.0, 50.0), (2.0, 50.0)], y_max=40.0) == pytest.approx(100.0)


def test_three_points_by_hand():
  # y_max 80: W(80) = 1, W(78) = exp(-0.075) = 0.92774349, W(76) = exp(-0.15) = 0.86070798.
  # 78 W(78) = 72.36399193, 76 W(76) = 65.41380621.
  # AUP = 1.5 * 80                               = 120
  #     + 1/2 * (2.5 - 1.5) * (72.36399193 + 80) =  76.18199597
  #     + 1/2 * (4.0 - 2.5) * (65.41380621 + 72.36399193) = 103.33334861
  #     = 299.51534458
  points = [(4.0, 76.0), (1.5, 80.0), (2.5, 78.0)]
  for order in itertools.permutations(points):
    assert aup(list(order), y_max=80.0) == pytest.approx(299.51534458, abs=1e-6)


def test_tpf_ties_sort_more_accurate_first():
  # Sorted (1, 80), (1, 70): y_1 = 80, so 70 < 75 is dropped; the other order would give 70.
  assert aup([(1.0, 70.0), (1.0, 80.0)], y_max=80.0) == pytest.approx(80.0)
  points = [(2.0, 76.0), (1.0, 78.0), (2.0, 80.0), (3.0, 75.0)]
  results = {aup(list(order), y_max=80.0) for order in itertools.permutations(points)}
  assert len(results) == 1


def test_zero_accuracy_everywhere_scores_zero():
  assert aup([(1.0, 0.0), (3.0, 0.0)], y_max=0.0) == 0.0


@pytest.mark.parametrize("points, y_max, match", [
  ([], 80.0, "empty"),
  ([(0.0, 50.0)], 80.0, "tpf"),
  ([(1.0, 150.0)], 80.0, "percent"),
  ([(1.0, 50.0)], -1.0, "y_max"),
])
def test_invalid_inputs(points, y_max, match):
  with pytest.raises(ValueError, match=match):
    aup(points, y_max)


def test_default_y_max_is_best_accuracy_of_all_runs():
  assert default_y_max([[(1.0, 80.0), (2.0, 70.0)], [(3.0, 85.0)]]) == 85.0
  with pytest.raises(ValueError):
    default_y_max([[], []])
