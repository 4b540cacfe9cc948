"""Compile programs ahead of time for a target and report each one's per-device memory against the device's.

Per device: arguments, outputs, temporaries and aliased (donated) bytes from `Compiled.memory_analysis()`; what
the run holds beside each program is the timeline's part (`timeline.py`). A compile that fails (a TPU program out of
HBM, a lowering the target rejects) is reported on its program's line and counts as not fitting: the step cannot run.
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import jax

from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.plan.programs import device_bytes

GIB = 1 << 30


class Report(NamedTuple):
  """Memory of one compiled program per device (bytes), or the error that stopped its compile."""
  name: str
  calls: float | None
  argument: int = 0
  output: int = 0
  temp: int = 0
  alias: int = 0
  code: int = 0
  compile_s: float = 0.0
  error: str | None = None
  held: int = 0  # bytes of the output arrays themselves (`output` also counts XLA's tuple index tables)


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 240 else text[:237] + "..."


def compile_one(p, done: dict) -> tuple[Report, object]:
  """(Report, compiled or None) of one `programs.Program`; `done` maps names to the executables compiled before it."""
  try:
    args = p.args(done) if callable(p.args) else p.args
  except KeyError as e:
    return Report(p.name, p.calls, error=f"not compiled: needs the outputs of {e.args[0]}"), None
  start = time.perf_counter()
  try:
    with mesh_lib.activate(p.mesh) if p.mesh is not None else contextlib.nullcontext():
      compiled = p.fn.lower(*args, **p.kwargs).compile()
  except Exception as e:  # noqa: BLE001 - any compiler error is this program's result, reported on its line
    return Report(p.name, p.calls, compile_s=time.perf_counter() - start, error=_first_line(e)), None
  m = compiled.memory_analysis()
  held = device_bytes(jax.tree.leaves(compiled.out_info))
  return Report(p.name, p.calls, m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                m.alias_size_in_bytes, m.generated_code_size_in_bytes, time.perf_counter() - start, held=held), compiled


def format_table(reports: list[Report]) -> list[str]:
  """One line per compiled program: its own GiB per device (arguments, outputs, donated, temporaries)."""
  head = f"{'program':<16} {'calls':>6} {'args':>7} {'out':>7} {'alias':>7} {'temp':>7} {'compile':>8}"
  lines = [head, "-" * len(head)]
  g = lambda b: f"{b / GIB:7.2f}"
  for r in reports:
    calls = "?" if r.calls is None else f"{r.calls:g}"
    if r.error:
      lines.append(f"{r.name:<16} {calls:>6} {'-':>7} {'-':>7} {'-':>7} {'-':>7} {r.compile_s:7.1f}s  error: {r.error}")
      continue
    lines.append(f"{r.name:<16} {calls:>6} {g(r.argument)} {g(r.output)} {g(r.alias)} {g(r.temp)} {r.compile_s:7.1f}s")
  return lines
