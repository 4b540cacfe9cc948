"""Accuracy under parallelism (AUP, SPEC §9): a weighted area under the (TPF, accuracy %) curve of a sweep."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

ALPHA = 3.0
DROP_MARGIN = 5.0


def weight(y: float, y_max: float, alpha: float = ALPHA) -> float:
  """W(y) = min(exp(-alpha (1 - y / y_max)), 1); with y_max == 0 every accuracy is >= y_max, so W = 1."""
  if y_max <= 0:
    return 1.0
  return min(math.exp(-alpha * (1.0 - y / y_max)), 1.0)


def _check(points: Sequence[tuple[float, float]], y_max: float) -> None:
  if not points:
    raise ValueError("aup needs at least one (tpf, accuracy_percent) point; got an empty list")
  if not (math.isfinite(y_max) and y_max >= 0):
    raise ValueError(f"y_max must be a finite accuracy percent >= 0, got {y_max!r}")
  for tpf, y in points:
    if not (math.isfinite(tpf) and tpf > 0):
      raise ValueError(f"tpf must be finite and > 0, got point {(tpf, y)!r}")
    if not (math.isfinite(y) and 0 <= y <= 100):
      raise ValueError(f"accuracy must be a percent in [0, 100], got point {(tpf, y)!r}")


def aup(points: Sequence[tuple[float, float]], y_max: float, alpha: float = ALPHA,
        margin: float = DROP_MARGIN) -> float:
  """AUP of (tpf, accuracy %) points exactly as SPEC §9 writes it; the first term rho_1*y_1 is NOT weighted by W.

  Points are sorted by (tpf, -accuracy): at equal TPF the more accurate point comes first, which fixes y_1 and the
  pairing of trapezoid sides deterministically. Points with accuracy below y_1 - margin are dropped.
  """
  _check(points, y_max)
  ordered = sorted(((float(t), float(y)) for t, y in points), key=lambda p: (p[0], -p[1]))
  y_1 = ordered[0][1]
  kept = [p for p in ordered if p[1] >= y_1 - margin]
  area = kept[0][0] * y_1
  for (rho_prev, y_prev), (rho, y) in zip(kept, kept[1:]):
    area += 0.5 * (rho - rho_prev) * (y * weight(y, y_max, alpha) + y_prev * weight(y_prev, y_max, alpha))
  return area


def default_y_max(runs: Iterable[Iterable[tuple[float, float]]]) -> float:
  """Best accuracy of any point of any compared run on one dataset (each run a list of (tpf, accuracy %))."""
  accuracies = [y for points in runs for _, y in points]
  if not accuracies:
    raise ValueError("default_y_max needs at least one (tpf, accuracy_percent) point among the runs")
  return max(accuracies)
