"""FLOPs of compiled programs read off their optimized HLO, with every loop body multiplied by its trip count.

`Compiled.cost_analysis()` counts a while/scan body once, whatever its trip count, and a deviceless GPU compile
reports no cost at all. So the plan compiles the same programs for one CPU device and counts matrix-multiply FLOPs
(`dot`: 2 x output elements x contracted size) in its HLO text, multiplying each while body by the trip count XLA
annotated (`known_trip_count`). Loops whose trip count depends on data (the decode loop) take the program's
assumed `loop_trips` by nesting depth; conditionals count their most expensive branch. Elementwise work is left
out (well under 1% of a transformer step).
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple

_HEADER = re.compile(r"^(?:ENTRY )?%([^\s(]+) \(.*\{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([^\s=]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_ARRAY = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


class Flops(NamedTuple):
  """Matmul FLOPs of one call, the data-dependent loops met (counted with assumed trips), custom calls skipped."""
  total: float
  dynamic_loops: int
  custom_calls: int


def _dims(type_str: str) -> tuple[int, ...] | None:
  m = _ARRAY.match(type_str.strip())
  return tuple(int(d) for d in m.group(1).split(",") if d) if m else None


def _parse(text: str) -> tuple[dict, str]:
  """{computation: [(name, type, op, rest)]} and the entry computation's name."""
  comps, entry, current = {}, None, None
  for line in text.splitlines():
    m = _HEADER.match(line)
    if m:
      current = comps.setdefault(m.group(1), [])
      entry = m.group(1) if line.startswith("ENTRY") else entry
      continue
    if line.startswith("}"):
      current = None
      continue
    m = _INSTR.match(line) if current is not None else None
    if m:
      current.append(m.groups())
  return comps, entry


def _dot_flops(types: dict, type_str: str, rest: str) -> float:
  out = _dims(type_str)
  lhs = re.match(r"\s*(?:([a-z]\w*\[[\d,]*\]\S*) )?%([^\s,)]+)", rest)
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
  if out is None or lhs is None or contracting is None:
    return 0.0
  lhs_dims = _dims(lhs.group(1)) if lhs.group(1) else _dims(types.get(lhs.group(2), ""))
  if lhs_dims is None:
    return 0.0
  k = math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(",") if i)
  return 2.0 * math.prod(out) * k


def _callees(rest: str, key: str) -> list[str]:
  m = re.search(key + r"=\{([^}]*)\}", rest) if key == "branch_computations" else re.search(key + r"=%([^\s,)]+)", rest)
  if not m:
    return []
  return [c.strip().lstrip("%") for c in m.group(1).split(",")] if key == "branch_computations" else [m.group(1)]


def hlo_flops(text: str, loop_trips: tuple[float, ...] = ()) -> Flops:
  """Matmul FLOPs of one execution of an optimized HLO module (`Compiled.as_text()`)."""
  comps, entry = _parse(text)

  @functools.lru_cache(maxsize=None)
  def count(name: str, depth: int) -> Flops:
    instrs = comps.get(name, [])
    types = {n: t for n, t, _, _ in instrs}
    total, dynamic, custom = 0.0, 0, 0
    for _, type_str, op, rest in instrs:
      if op == "dot":
        total += _dot_flops(types, type_str, rest)
      elif op in ("custom-call", "convolution"):
        custom += 1
      elif op == "while":
        trip = _TRIP.search(rest)
        if trip:
          factor, inner = float(trip.group(1)), depth
        else:
          factor, inner = (loop_trips[depth] if depth < len(loop_trips) else 1.0), depth + 1
          dynamic += 1
        for body in _callees(rest, "body"):
          f = count(body, inner)
          total, dynamic, custom = total + factor * f.total, dynamic + f.dynamic_loops, custom + f.custom_calls
      elif op == "conditional":
        branches = _callees(rest, "branch_computations") or _callees(rest, "true_computation") + _callees(
            rest, "false_computation")
        if branches:
          f = max((count(b, depth) for b in branches), key=lambda x: x.total)
          total, dynamic, custom = total + f.total, dynamic + f.dynamic_loops, custom + f.custom_calls
      else:
        for key in ("calls", "to_apply"):
          for callee in _callees(rest, key):
            f = count(callee, depth)
            total, dynamic, custom = total + f.total, dynamic + f.dynamic_loops, custom + f.custom_calls
    return Flops(total, dynamic, custom)

  return count(entry, 0) if entry else Flops(0.0, 0, 0)
