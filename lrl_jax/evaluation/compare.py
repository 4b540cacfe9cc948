"""Compare training runs: `python -m lrl_jax.evaluation.compare W1/summary.json W2/summary.json ...`.

Prints a Markdown table of each run's starting and final policy (accuracy %, TPF, AUP), with every AUP computed
against one y_max (the best accuracy of any listed policy), so the numbers are comparable across runs.
"""

from __future__ import annotations

import json
import sys

from lrl_jax.evaluation.aup import aup


def compare(summaries: dict[str, dict]) -> str:
  """Markdown rows: the shared starting policy (from the first run) and each run's final policy."""
  first = next(iter(summaries.values()))
  policies = [("start", first["start"])] + [(f"{name} (final)", s["final"]) for name, s in summaries.items()]
  y_max = max(p["accuracy"] for _, pol in policies for p in pol["points"])
  lines = [f"| policy | steps | minutes | accuracy % | TPF | AUP (y_max {y_max:.1f}) |", "| --- | --- | --- | --- | --- | --- |"]
  for (label, pol), run in zip(policies, [None] + list(summaries.values())):
    steps = "-" if run is None else run["steps"]
    minutes = "-" if run is None else f"{run['wall_seconds'] / 60:.1f}"
    score = aup([(p["tpf"], p["accuracy"]) for p in pol["points"]], y_max)
    lines.append(f"| {label} | {steps} | {minutes} | {pol['accuracy']:.1f} | {pol['tpf']:.2f} | {score:.1f} |")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  if not argv:
    print(__doc__.splitlines()[0], file=sys.stderr)
    return 2
  summaries = {}
  for path in argv:
    with open(path) as f:
      summary = json.load(f)
    if "final" not in summary:
      print(f"error: {path} has no evaluation (the run had no data.eval)", file=sys.stderr)
      return 2
    summaries[summary["algorithm"]] = summary
  print(compare(summaries))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
