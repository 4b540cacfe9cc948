"""Paired comparisons of a study: the mean per-seed difference between two rows with a Student-t interval.

Each seed's rows share that seed's warm start, so row B minus row A per seed removes the warm starts' spread.
The t quantile is computed here (exact closed forms of the t distribution for integer degrees of freedom,
Abramowitz & Stegun 26.7.3-4), so the module needs numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# What a claim compares, per seed: final accuracy %, final TPF over the seed's warm-start TPF, AUP (first threshold
# for the first two, the whole sweep for AUP).
CLAIM_KEYS = ("accuracy", "tpf_gain", "aup")


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


class Claim(NamedTuple):
  """Row `a` minus row `b` per seed (`start` names the warm starts), read as `label`."""
  a: str
  b: str
  label: str


def claims(entries) -> list[Claim]:
  """The config's `paired` entries as Claims; ValueError naming the entry when one is not (a, b, label)."""
  out = []
  for i, entry in enumerate(entries):
    if len(entry) != 3 or not all(isinstance(x, str) and x for x in entry):
      raise ValueError(f"paired[{i}]: expected (row a, row b, label), got {entry!r}")
    out.append(Claim(*entry))
  return out


def compare(result: Mapping, wanted: Sequence[Claim], confidence: float = 0.95) -> list[dict]:
  """Each claim whose two rows share >= 2 seeds: a - b on every CLAIM_KEYS key as a PairedDifference dict."""
  present = {r["name"]: set(r["per_seed"]) for r in result["rows"]}
  out = []
  for claim in wanted:
    if len(present.get(claim.a, set()) & present.get(claim.b, set())) < 2:
      continue
    diffs = {key: vars(paired_rows(result, claim.b, claim.a, key, confidence)) for key in CLAIM_KEYS}
    out.append({"a": claim.a, "b": claim.b, "label": claim.label, **diffs})
  return out


def markdown(comparisons: Sequence[Mapping]) -> str:
  """One line per claim: mean a - b [95% interval] of accuracy points, TPF gain and AUP, and the seed count."""
  if not comparisons:
    return ""
  cell = lambda d, digits: f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"
  conf = comparisons[0]["accuracy"]["confidence"]
  lines = ["| a − b | claim | seeds | Δ accuracy (points) | Δ TPF gain (×start) | Δ AUP |",
           "| --- | --- | --- | --- | --- | --- |"]
  for c in comparisons:
    lines.append(f"| {c['a']} − {c['b']} | {c['label']} | {c['accuracy']['n']} | {cell(c['accuracy'], 1)} | "
                 f"{cell(c['tpf_gain'], 2)} | {cell(c['aup'], 1)} |")
  return "\n".join(lines) + (f"\n\nPaired per seed (each seed's rows share its warm start): mean of a − b with its "
                             f"two-sided {conf:.0%} Student-t interval. TPF gain is final TPF / the seed's start TPF at "
                             "the first threshold.\n")
