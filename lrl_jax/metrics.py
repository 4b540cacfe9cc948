"""Metric writers: W/metrics.jsonl always, TensorBoard and W&B when enabled; and the end-of-run summary table."""

from __future__ import annotations

import json
import os
from typing import Any


class MetricWriter:
  """Append one JSON line per step; mirror scalars to TensorBoard (tensorboardX) and optionally W&B."""

  def __init__(self, workdir: str, tensorboard: bool = True, wandb_project: str | None = None,
               config: dict | None = None):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._wandb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
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
