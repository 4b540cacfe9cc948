"""Evaluation report: AUP per run and dataset, `eval_results.json`, an accuracy-vs-TPF plot and `eval_table.md`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lrl_jax import files
from lrl_jax.evaluation import paper
from lrl_jax.evaluation.aup import ALPHA, aup, default_y_max

FLOAT_FIELDS = ("threshold", "accuracy", "tpf", "tpf_total", "tps", "mean_length", "truncation_rate")
INT_FIELDS = ("block_size", "batch_size", "n")
POINT_FIELDS = ("threshold", "block_size", "accuracy", "tpf", "tpf_total", "tps", "batch_size", "device",
                "mean_length", "truncation_rate", "n")
RESULTS_NAME, PLOT_NAME, TABLE_NAME = "eval_results.json", "eval_curves.png", "eval_table.md"


def _datasets(run: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
  """A run's datasets keyed by normalised name; two spellings of one dataset in a run are an error."""
  out: dict[str, Mapping[str, Any]] = {}
  for name, entry in run["datasets"].items():
    key = paper.normalize_dataset(name)
    if key in out:
      raise ValueError(f"run {run['checkpoint']!r} lists dataset {key!r} twice (as {name!r})")
    out[key] = entry
  return out


def _xy(entry: Mapping[str, Any]) -> list[tuple[float, float]]:
  return [(float(p["tpf"]), float(p["accuracy"])) for p in entry["points"]]


def compute_aups(runs: Sequence[dict[str, Any]], y_max_override: float | Mapping[str, float] | None = None,
                 alpha: float = ALPHA) -> dict[str, float]:
  """Set `runs[i]["datasets"][d]["aup"]` in place and return y_max per normalised dataset name.

  y_max defaults to the best accuracy of any point of any run on that dataset; `y_max_override` replaces it,
  for every dataset (a float) or per dataset (a mapping; unlisted datasets keep the default).
  """
  per_dataset: dict[str, list[list[tuple[float, float]]]] = {}
  for run in runs:
    for key, entry in _datasets(run).items():
      per_dataset.setdefault(key, []).append(_xy(entry))
  overrides = {} if y_max_override is None else (
    {paper.normalize_dataset(k): float(v) for k, v in y_max_override.items()}
    if isinstance(y_max_override, Mapping) else dict.fromkeys(per_dataset, float(y_max_override)))
  y_max = {key: overrides.get(key, default_y_max(curves)) for key, curves in per_dataset.items()}
  for run in runs:
    for name, entry in run["datasets"].items():
      try:
        entry["aup"] = aup(_xy(entry), y_max[paper.normalize_dataset(name)], alpha)
      except ValueError as e:
        raise ValueError(f"run {run['checkpoint']!r}, dataset {name!r}: {e}") from e
  return y_max


def _point(point: Mapping[str, Any]) -> dict[str, Any]:
  missing = [k for k in POINT_FIELDS if k not in point]
  if missing:
    raise ValueError(f"point lacks {missing}; every point needs {list(POINT_FIELDS)}")
  out = {k: float(point[k]) if k in FLOAT_FIELDS else int(point[k]) if k in INT_FIELDS else str(point[k])
         for k in POINT_FIELDS}
  return {**out, **{k: v for k, v in point.items() if k not in out}}


def build_results(runs: Sequence[dict[str, Any]], config: Mapping[str, Any], device: str,
                  y_max_override: float | Mapping[str, float] | None = None) -> dict[str, Any]:
  """The eval_results.json document: y_max, runs (normalised dataset names, AUP, typed points), config, device.

  Fills "aup" into `runs` as `compute_aups` does; point keys beyond POINT_FIELDS are kept after them.
  """
  y_max = compute_aups(runs, y_max_override)
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return {
    "y_max": y_max,
    "runs": [{
      "checkpoint": str(run["checkpoint"]),
      "datasets": {key: {"aup": float(entry["aup"]), "points": [_point(p) for p in entry["points"]]}
                   for key, entry in _datasets(run).items()},
    } for run in runs],
    "config": config,
    "device": str(device),
  }


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
  path = Path(path)
  files.write_with(path, lambda f: json.dump(results, f, indent=2, allow_nan=False), "w")
  return path


def dataset_order(results: Mapping[str, Any]) -> list[str]:
  """Datasets of the results, the paper's order first, then the others alphabetically."""
  names = {key for run in results["runs"] for key in run["datasets"]}
  known = [d for d in paper.DISPLAY_NAMES if d in names]
  return known + sorted(names - set(known))


def accuracy_tpf_figure(results: Mapping[str, Any]) -> Figure:
  """Accuracy vs TPF, one subplot per dataset, one curve per checkpoint labelled with its AUP (Agg canvas)."""
  datasets = dataset_order(results)
  if not datasets:
    raise ValueError("results hold no dataset to plot")
  fig = Figure(figsize=(5 * len(datasets), 4), layout="constrained")
  FigureCanvasAgg(fig)
  for ax, key in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets):
    for run in results["runs"]:
      if key in run["datasets"]:
        entry = run["datasets"][key]
        xy = sorted(_xy(entry), key=lambda p: (p[0], -p[1]))
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o",
                label=f"{run['checkpoint']} (AUP {entry['aup']:.1f})")
    ax.set_title(f"{paper.display_name(key)} (y_max {results['y_max'][key]:.1f})")
    ax.set_xlabel("TPF (tokens per denoising forward)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  return fig


def write_plot(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
  path = Path(path)
  fig = accuracy_tpf_figure(results)
  files.write_with(path, lambda f: fig.savefig(f, format="png", dpi=120), "wb")
  return path


def best_point(entry: Mapping[str, Any]) -> Mapping[str, Any]:
  """The most accurate point of a sweep; ties go to the higher TPF."""
  return max(entry["points"], key=lambda p: (p["accuracy"], p["tpf"]))


def markdown_table(results: Mapping[str, Any]) -> str:
  """One row per run per dataset (best point and AUP), the paper's rows beside each dataset it reported."""
  lines = [
    "| dataset | checkpoint | θ | B | accuracy % | TPF | TPF incl. commit | TPS (batch, device) | n | AUP |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  datasets = dataset_order(results)
  for key in datasets:
    name = paper.display_name(key)
    for run in results["runs"]:
      if key in run["datasets"]:
        entry = run["datasets"][key]
        p = best_point(entry)
        lines.append(
          f"| {name} | {run['checkpoint']} | {p['threshold']:g} | {p['block_size']} | {p['accuracy']:.1f} | "
          f"{p['tpf']:.2f} | {p['tpf_total']:.2f} | {p['tps']:.1f} ({p['batch_size']}, {p['device']}) | "
          f"{p['n']} | {entry['aup']:.1f} |")
    for model, ref in paper.paper_rows(key):
      lines.append(f"| {name} | paper: {model} | | | {ref.accuracy:.1f} | {ref.tpf:.2f} | | | | {ref.aup:.1f} |")
  y_max = ", ".join(f"{paper.display_name(k)} {results['y_max'][k]:.1f}" for k in datasets)
  lines += ["", f"Accuracy and TPF at each run's most accurate point; AUP over its whole sweep with y_max: {y_max}.",
            "Paper rows: SDAR-8B-b32 family, Table 1 (their AUP uses their own y_max)."]
  if paper.WALL_CLOCK_DATASET in datasets:
    tps = "; ".join(f"{m} {v:.2f} TPS" for m, v in paper.WALL_CLOCK_TPS.items())
    lines.append(f"Paper wall clock ({paper.display_name(paper.WALL_CLOCK_DATASET)}, "
                 f"{paper.WALL_CLOCK_HARDWARE}): {tps} (LightningRL at TPF {paper.WALL_CLOCK_TPF['LightningRL']}).")
  return "\n".join(lines) + "\n"


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
  """Write eval_results.json, eval_curves.png and eval_table.md into out_dir; return their paths by kind."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  table = markdown_table(results)
  table_path = out / TABLE_NAME
  files.write_with(table_path, lambda f: f.write(table), "w")
  return {"json": write_json(results, out / RESULTS_NAME), "plot": write_plot(results, out / PLOT_NAME),
          "table": table_path}
