"""Aggregate a comparison: per row (start, then each variant) mean ± std over seeds of accuracy, TPF and AUP with
one y_max for all rows; the Markdown table, compare.json, the accuracy-TPF frontier and the eval curves."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lrl_jax import files
from lrl_jax.evaluation.aup import aup

METRICS = ("accuracy", "tpf", "aup")
TABLE_NAME, JSON_NAME, PLOT_NAME, CURVES_NAME = "compare.md", "compare.json", "frontier.png", "curves.png"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; nan for one value) over seeds."""
  x = np.asarray(values, np.float64)
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def _points(policy: Mapping) -> list[tuple[float, float]]:
  return [(float(p["tpf"]), float(p["accuracy"])) for p in policy["points"]]


def aggregate(runs: Mapping[str, Mapping[int, Mapping]]) -> dict:
  """runs: variant -> seed -> summary.json. Rows: "start" (each seed's warm start, read from its first variant)
  then every variant's final policy; y_max = best accuracy of any point of any listed policy."""
  starts: dict[int, Mapping] = {}
  for by_seed in runs.values():
    for seed, summary in by_seed.items():
      starts.setdefault(seed, summary["start"])
  policies = [("start", {s: (starts[s], None) for s in sorted(starts)})] + [
      (name, {s: (summary["final"], summary) for s, summary in sorted(by_seed.items())})
      for name, by_seed in runs.items()]
  y_max = max(y for _, by_seed in policies for pol, _ in by_seed.values() for _, y in _points(pol))
  rows = []
  for name, by_seed in policies:
    per_seed = {s: {"accuracy": pol["accuracy"], "tpf": pol["tpf"], "aup": aup(_points(pol), y_max),
                    "tpf_gain": pol["tpf"] / starts[s]["tpf"],
                    "minutes": summary["wall_seconds"] / 60 if summary else None,
                    "points": _points(pol)} for s, (pol, summary) in by_seed.items()}
    row = {"name": name, "seeds": sorted(per_seed), "per_seed": per_seed}
    for key in METRICS:
      row[key] = mean_std([v[key] for v in per_seed.values()])
    if name != "start":
      row["minutes"] = mean_std([v["minutes"] for v in per_seed.values()])
    rows.append(row)
  return {"y_max": y_max, "rows": rows}


def _pm(pair: tuple[float, float], digits: int) -> str:
  mean, std = pair
  return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def markdown(result: Mapping, overrides: Mapping[str, str] | None = None) -> str:
  """One line per row: seeds, accuracy %, TPF, AUP (mean ± std over seeds), minutes per run, the variant's
  overrides."""
  overrides = overrides or {}
  lines = [f"| row | seeds | accuracy % | TPF | AUP (y_max {result['y_max']:.1f}) | minutes | settings |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for row in result["rows"]:
    minutes = _pm(row["minutes"], 1) if "minutes" in row else "-"
    lines.append(f"| {row['name']} | {len(row['seeds'])} | {_pm(row['accuracy'], 1)} | {_pm(row['tpf'], 2)} | "
                 f"{_pm(row['aup'], 1)} | {minutes} | {overrides.get(row['name'], '')} |")
  return "\n".join(lines) + "\n\nMean ± sample std (ddof 1) over seeds; accuracy and TPF at the first threshold, AUP " \
      "over the whole threshold sweep.\n"


def frontier_figure(result: Mapping) -> Figure:
  """Accuracy vs TPF: each row's threshold sweep averaged over seeds (error bars: std), seeds as faint dots."""
  fig = Figure(figsize=(7, 4.5), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  for i, row in enumerate(result["rows"]):
    color = f"C{i % 10}"
    curves = np.asarray([v["points"] for v in row["per_seed"].values()])  # [seeds, thresholds, (tpf, acc)]
    curves = curves[:, np.argsort(curves[..., 0].mean(0))]  # by TPF: the headline threshold may come first
    mean = curves.mean(0)
    std = curves.std(0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    ax.errorbar(mean[:, 0], mean[:, 1], xerr=std[:, 0], yerr=std[:, 1], color=color, marker="o", ms=4, capsize=2,
                lw=1.2, ls="--" if row["name"] == "start" else "-",
                label=f"{row['name']} (AUP {row['aup'][0]:.0f})")
    ax.scatter(curves[..., 0].ravel(), curves[..., 1].ravel(), color=color, s=6, alpha=0.3)
  ax.set_xlabel("TPF (tokens per denoising forward)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"accuracy-TPF over thresholds, mean ± std over seeds (y_max {result['y_max']:.1f})")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="x-small", ncol=2)
  return fig


def read_metrics(path: str) -> dict[int, dict]:
  """metrics.jsonl by step (a resumed run may repeat steps: the last line of a step wins)."""
  out = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      out[int(row["step"])] = row
  return out


def _with_final(log: dict[int, dict], run_dir: str) -> dict[int, dict]:
  """The log plus the final evaluation of summary.json at its last step (the trainer writes it there, not to
  metrics.jsonl), so a curve ends where the table's final row is measured."""
  path = os.path.join(run_dir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      summary = json.load(f)
    if "final" in summary:
      step = int(summary["steps"])
      log.setdefault(step, {"step": step}).update(eval_accuracy=summary["final"]["accuracy"],
                                                  eval_tpf=summary["final"]["tpf"])
  return log


def curves(run_dirs: Mapping[str, Mapping[int, str]], keys=("eval_accuracy", "eval_tpf")) -> dict:
  """variant -> key -> (steps, mean over seeds, std over seeds) of each metric at the steps where every seed has it
  (the final evaluation included)."""
  out = {}
  for name, by_seed in run_dirs.items():
    logs = [_with_final(read_metrics(os.path.join(d, "metrics.jsonl")), d) for d in by_seed.values()
            if os.path.exists(os.path.join(d, "metrics.jsonl"))]
    if not logs:
      continue
    out[name] = {}
    for key in keys:
      steps = sorted(set.intersection(*[{s for s, r in log.items() if key in r} for log in logs]))
      values = np.asarray([[log[s][key] for s in steps] for log in logs]).reshape(len(logs), len(steps))
      std = values.std(0, ddof=1) if len(logs) > 1 else np.zeros(len(steps))
      out[name][key] = (steps, values.mean(0).tolist(), std.tolist())
  return out


def curves_figure(data: Mapping, start: Mapping | None = None) -> Figure:
  """Eval accuracy and TPF during training (mean ± std over seeds), one line per variant; step 0 = start."""
  fig = Figure(figsize=(10, 3.6), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  for i, (name, series) in enumerate(data.items()):
    for ax, key in zip(axes, ("eval_accuracy", "eval_tpf")):
      if key not in series:
        continue
      steps, mean, std = (np.asarray(v, np.float64) for v in series[key])
      if start is not None:
        steps, mean, std = np.r_[0, steps], np.r_[start[key][0], mean], np.r_[start[key][1], std]
      ax.plot(steps, mean, marker=".", color=f"C{(i + 1) % 10}", label=name)
      ax.fill_between(steps, mean - std, mean + std, color=f"C{(i + 1) % 10}", alpha=0.12)
  for ax, title in zip(axes, ("eval accuracy % (first threshold)", "eval TPF (first threshold)")):
    ax.set_title(title)
    ax.set_xlabel("RL step")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="x-small", ncol=2)
  return fig


def save_figure(fig: Figure, path: str) -> None:
  files.write_with(path, lambda f: fig.savefig(f, format="png", dpi=90), mode="wb")
