"""The largest value of a knob (rollout batch, micro-batch rows) whose programs all fit, by compiling candidates.

Memory grows with the knob, so a binary search over its multiples compiles about log2(value / multiple) + 1
candidates; the smallest is tried first, so a knob whose programs fail at any size (a lowering the target rejects)
costs one compile.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lrl_jax.plan.memory import Report


class Found(NamedTuple):
  """Largest fitting value (None: none does) with its reports, and every value tried with its outcome
  ("fits"; "over" the memory budget, a TPU compile out of HBM included; "error": a program failed otherwise)."""
  value: int | None
  reports: list[Report]
  tried: list[tuple[int, str]]


def largest_fitting(value: int, multiple: int, fits: Callable[[list[Report]], bool],
                    compile_at: Callable[[int], list[Report]]) -> Found:
  """Binary search over the multiples of `multiple` below `value`; `compile_at(v)` reports the programs at v."""
  candidates = list(range(multiple, value, multiple))
  tried, best = [], (None, [])

  def check(value: int) -> bool:
    nonlocal best
    reports = compile_at(value)
    ok = fits(reports)
    failed = any(r.error and "RESOURCE_EXHAUSTED" not in r.error for r in reports)
    tried.append((value, "fits" if ok else "error" if failed else "over"))
    if ok and (best[0] is None or value > best[0]):
      best = (value, reports)
    return ok

  if not candidates or not check(candidates[0]):
    return Found(None, [], tried)
  lo, hi = 0, len(candidates) - 1  # candidates[lo] fits; find the last index that does
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if check(candidates[mid]):
      lo = mid
    else:
      hi = mid - 1
  return Found(best[0], best[1], tried)
