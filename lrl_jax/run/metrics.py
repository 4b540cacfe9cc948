"""Metric writers: W/metrics.jsonl always, TensorBoard and W&B when enabled; and the end-of-run summary table.

A resumed run starts from its restored step: rows written after that step by the killed run (which the resumed run
repeats) are dropped from metrics.jsonl and hidden in TensorBoard (`purge_step`), so no step appears twice.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lrl_jax import files

METRICS_NAME = "metrics.jsonl"


def truncate_rows(path: str, last_step: int) -> int:
  """Keep the rows of a metrics.jsonl with step <= last_step (and drop a torn last line); return how many went."""
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a kill
        dropped += 1
        continue
      if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  if dropped:
    files.write_text(path, "".join(kept))
  return dropped


class MetricWriter:
  """Append one JSON line per step; mirror scalars to TensorBoard (tensorboardX) and optionally W&B.

  `start_step`: the step the run (re)starts from; rows after it are removed first.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, wandb_project: str | None = None,
               config: dict | None = None, start_step: int = 0):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, METRICS_NAME)
    truncate_rows(self.path, start_step)
    self._tb = None
    self._wandb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)
    if wandb_project:
      import wandb
      self._wandb = wandb.init(project=wandb_project, dir=workdir, config=config, resume="allow")

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


def summary_table(rows: dict[str, dict[str, Any]], columns: tuple[str, ...]) -> str:
  """A plain-text table: one line per named row, the given columns."""
  head = ["policy"] + list(columns)
  lines = [head] + [[name] + [_fmt(values.get(c)) for c in columns] for name, values in rows.items()]
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
  out.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(out)


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.3f}"
  return "-" if value is None else str(value)
