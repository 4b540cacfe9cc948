"""Compile programs ahead of time for a target and report each one's per-device memory against the device's.

Per device: arguments, outputs, temporaries and aliased (donated) bytes from `Compiled.memory_analysis()`, plus
the state that stays alive beside the program (`Program.live`). Peak = live + arguments + outputs - aliased +
temporaries + generated code. A compile that fails (a TPU program out of HBM, a lowering the target rejects) is
reported on its program's line and counts as not fitting: the step cannot run.
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.plan.programs import Program, device_bytes

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
  live: int = 0
  compile_s: float = 0.0
  error: str | None = None

  @property
  def peak(self) -> int:
    return self.live + self.argument + self.output - self.alias + self.temp + self.code

  def fits(self, budget: int) -> bool:
    return self.error is None and self.peak <= budget


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 240 else text[:237] + "..."


def compile_one(p: Program, done: dict, state: dict) -> tuple[Report, object]:
  """(Report, compiled or None) of one program; `done` maps names to the executables compiled before it."""
  live = sum(device_bytes(state[k]) for k in p.live)
  try:
    args = p.args(done) if callable(p.args) else p.args
  except KeyError as e:
    return Report(p.name, p.calls, live=live, error=f"not compiled: needs the outputs of {e.args[0]}"), None
  start = time.perf_counter()
  try:
    with mesh_lib.activate(p.mesh) if p.mesh is not None else contextlib.nullcontext():
      compiled = p.fn.lower(*args, **p.kwargs).compile()
  except Exception as e:  # noqa: BLE001 - any compiler error is this program's result, reported on its line
    return Report(p.name, p.calls, live=live, compile_s=time.perf_counter() - start, error=_first_line(e)), None
  m = compiled.memory_analysis()
  return Report(p.name, p.calls, m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                m.alias_size_in_bytes, m.generated_code_size_in_bytes, live, time.perf_counter() - start), compiled


def format_table(reports: list[Report], budget: int) -> list[str]:
  """One line per program: GiB per device and whether its peak fits the budget."""
  head = (f"{'program':<16} {'calls':>6} {'live':>7} {'args':>7} {'out':>7} {'alias':>7} {'temp':>7} {'peak':>7} "
          f"{'fits':>5} {'compile':>8}")
  lines = [head, "-" * len(head)]
  for r in reports:
    calls = "?" if r.calls is None else f"{r.calls:g}"
    if r.error:
      lines.append(f"{r.name:<16} {calls:>6} {r.live / GIB:7.2f} {'-':>7} {'-':>7} {'-':>7} {'-':>7} {'-':>7} "
                   f"{'no':>5} {r.compile_s:7.1f}s  error: {r.error}")
      continue
    g = lambda b: f"{b / GIB:7.2f}"
    lines.append(f"{r.name:<16} {calls:>6} {g(r.live)} {g(r.argument)} {g(r.output)} {g(r.alias)} {g(r.temp)} "
                 f"{g(r.peak)} {'yes' if r.fits(budget) else 'no':>5} {r.compile_s:7.1f}s")
  return lines
