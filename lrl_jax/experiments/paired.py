"""Paired comparisons of a study: the mean per-seed difference between two rows with a Student-t interval.

Each seed's rows share that seed's warm start, so row B minus row A per seed removes the warm starts' spread.
The t quantile is computed here (exact closed forms of the t distribution for integer degrees of freedom,
Abramowitz & Stegun 26.7.3-4), so the module needs numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
  """mean of (b - a) over n pairs, its sample std (ddof 1) and the two-sided `confidence` t-interval [low, high]."""

  mean: float
  low: float
  high: float
  std: float
  n: int
  confidence: float


def t_central_mass(t: float, df: int) -> float:
  """P(|T| <= t) for Student's t with integer df >= 1 (A&S 26.7.3 for odd df, 26.7.4 for even)."""
  if df < 1 or int(df) != df:
    raise ValueError(f"df must be a positive integer, got {df}")
  theta = math.atan(abs(t) / math.sqrt(df))
  s, c2 = math.sin(theta), math.cos(theta) ** 2
  if df % 2 == 0:  # sin θ [1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... up to cos^(df-2)θ]
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
      term *= c2 * (2 * k - 1) / (2 * k)
      total += term
    return s * total
  if df == 1:
    return 2 * theta / math.pi
  term, total = 1.0, 1.0  # 2/π (θ + sin θ cos θ [1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ... up to cos^(df-3)θ])
  for k in range(1, (df - 1) // 2):
    term *= c2 * (2 * k) / (2 * k + 1)
    total += term
  return 2 / math.pi * (theta + s * math.cos(theta) * total)


def t_quantile(confidence: float, df: int) -> float:
  """q with P(|T| <= q) = confidence (the two-sided critical value), by bisection to 1e-12 relative."""
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  low, high = 0.0, 1.0
  while t_central_mass(high, df) < confidence:
    high *= 2
  while high - low > 1e-12 * high:
    mid = (low + high) / 2
    low, high = (mid, high) if t_central_mass(mid, df) < confidence else (low, mid)
  return (low + high) / 2


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
  """b[i] - a[i] over the pairs: mean ± t(confidence, n-1) · std / sqrt(n); needs two pairs or more."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
    raise ValueError(f"need two equal-length sequences of >= 2 pairs, got shapes {a.shape} and {b.shape}")
  d = b - a
  mean, std = float(d.mean()), float(d.std(ddof=1))
  half = t_quantile(confidence, len(d) - 1) * std / math.sqrt(len(d))
  return PairedDifference(mean, mean - half, mean + half, std, len(d), confidence)


def paired_rows(result: Mapping, a: str, b: str, key: str, confidence: float = 0.95) -> PairedDifference:
  """Row b minus row a of `table.aggregate`'s result on `key` (accuracy, tpf, aup), over the seeds both rows have."""
  rows = {r["name"]: r["per_seed"] for r in result["rows"]}
  for name in (a, b):
    if name not in rows:
      raise KeyError(f"no row {name!r} (rows: {sorted(rows)})")
  seeds = sorted(set(rows[a]) & set(rows[b]))
  return paired_difference([rows[a][s][key] for s in seeds], [rows[b][s][key] for s in seeds], confidence)
