"""One RL step as a timeline of phases: per device, the buffers the trainer holds beside each phase's program plus the
program's own bytes. The step fits when every phase's peak fits; `after` is what the trainer holds when the phase
ends (tests/run/test_memory_timeline.py measures it with `jax.live_arrays()` at the trainer's phase boundaries).

Buffers: the run's state (float32 params, Adam moments, reference params in the compute dtype: kept all run), the
rollout-layout params (the reshard's output; alive through the rollout or the eval sweep, then freed), the
gradient sums (micro_grads' output; alive until the update is applied). The engine's slots and KV pool and each
micro-batch are arguments of their programs: they live inside their phase only. An argument that is a held buffer
counts once.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from lrl_jax.plan.memory import GIB, Report

STATE = ("params", "opt_state", "ref_params")


class Phase(NamedTuple):
  """A phase of the step: its program (None: host work), the buffers held beside the state while it runs, the held
  buffers among the program's arguments, and the buffers held beside the state when it ends."""
  name: str
  program: str | None
  during: tuple[str, ...] = ()
  args: tuple[str, ...] = ()
  after: tuple[str, ...] = ()


class Row(NamedTuple):
  """Per-device bytes of one phase: held beside its program, the program's own, and held when the phase ends."""
  phase: str
  program: str | None
  held: int
  own: int
  after: int
  error: str | None = None

  @property
  def peak(self) -> int:
    return self.held + self.own

  def fits(self, budget: int) -> bool:
    return self.error is None and self.peak <= budget


def phases(thresholds: Sequence[float]) -> list[Phase]:
  """The step in the trainer's order, then an eval sweep (one engine, θ a runtime argument), a checkpoint save and an
  HF export. The last eval threshold frees the eval params."""
  out = [Phase("reshard", "rollout/reshard", args=("params",), after=("rollout_params",)),
         Phase("rollout", "rollout/engine", during=("rollout_params",), args=("rollout_params",)),
         Phase("judge", None),
         Phase("logprobs", "logp_old/ref", args=("params",)),
         Phase("micro_grads", "micro_grads", args=("params",), after=("grads",)),
         Phase("accumulate", "accumulate", during=("grads",), args=("params", "grads"), after=("grads",)),
         Phase("apply", "apply", during=("grads",), args=("params", "opt_state", "grads")),
         Phase("eval/reshard", "rollout/reshard", args=("params",), after=("rollout_params",))]
  for i, th in enumerate(thresholds):
    last = i == len(thresholds) - 1
    out.append(Phase(f"eval θ={th:g}", "eval/engine", during=("rollout_params",), args=("rollout_params",),
                     after=() if last else ("rollout_params",)))
  return out + [Phase("save", None), Phase("export", "hf_export")]


def buffers(state_bytes: dict[str, int], reports: dict[str, Report]) -> dict[str, int]:
  """Per-device bytes of every buffer a phase may hold: the state's parts (`programs.state_bytes`), the rollout
  params (the reshard's outputs) and the gradient sums (micro_grads' outputs: grads sharded like params, loss sums),
  each from its program's output arrays (`Report.held`)."""
  out = dict(state_bytes)
  out["rollout_params"] = reports["rollout/reshard"].held if "rollout/reshard" in reports else 0
  out["grads"] = reports["micro_grads"].held if "micro_grads" in reports else 0
  return out


def build(steps: list[Phase], held: dict[str, int], reports: dict[str, Report], extra: dict[str, int]) -> list[Row]:
  """Rows of the timeline. `reports` are the compiled programs by name; `extra` gives the bytes of non-compiled
  work (the HF export's gathered piece)."""
  state = sum(held.get(k, 0) for k in STATE)
  rows = []
  for p in steps:
    during = state + sum(held[k] for k in p.during)
    after = state + sum(held[k] for k in p.after)
    r = reports.get(p.program) if p.program else None
    if p.program in extra:
      rows.append(Row(p.name, p.program, during, extra[p.program], after))
    elif p.program is None:
      rows.append(Row(p.name, None, during, 0, after))
    elif r is None or r.error:
      rows.append(Row(p.name, p.program, during, 0, after, r.error if r else "not compiled"))
    else:
      fresh = max(0, r.argument - sum(held[k] for k in p.args))
      rows.append(Row(p.name, p.program, during, fresh + r.output - r.alias + r.temp + r.code, after))
  return rows


def format_table(rows: list[Row], budget: int) -> list[str]:
  """One line per phase (GiB per device), then the largest peak named."""
  head = f"{'phase':<14} {'program':<16} {'held':>7} {'program':>8} {'peak':>7} {'after':>7} {'fits':>5}"
  lines = [head, "-" * len(head)]
  g = lambda b: f"{b / GIB:7.2f}"
  for r in rows:
    if r.error:
      lines.append(f"{r.phase:<14} {r.program or '-':<16} {g(r.held)} {'-':>8} {'-':>7} {g(r.after)} {'no':>5}  "
                   f"error: {r.error}")
      continue
    lines.append(f"{r.phase:<14} {r.program or '-':<16} {g(r.held)} {r.own / GIB:8.2f} {g(r.peak)} {g(r.after)} "
                 f"{'yes' if r.fits(budget) else 'no':>5}")
  top = max(rows, key=lambda r: r.peak)
  lines.append(f"largest peak: {top.phase} at {top.peak / GIB:.2f} GiB of {budget / GIB:.2f} GiB")
  return lines
