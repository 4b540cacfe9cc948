"""Comparison runner: `python -m lrl_jax.experiments --config configs/compare.py --workdir W [--config.x=y]`.

Runs each seed's warm start, then every variant × seed as `python -m lrl_jax.train` subprocesses pinned to
`config.workers` core slots (W/runs/VARIANT/seedS, each with run.log and the exact command), skipping finished
runs (summary.json) and resuming interrupted ones. Then writes W/compare.md, W/compare.json, W/frontier.png and
W/curves.png from every finished run, and prints the table.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from lrl_jax import files
from lrl_jax.experiments import paired, plan, scheduler, table


def report(config, tasks: list[plan.Task], workdir: str) -> str | None:
  """Aggregate the finished runs into W/compare.{md,json} (rows, then the paired claims), frontier.png and
  curves.png; the Markdown (None if no run finished)."""
  runs, dirs = {}, {}
  for t in tasks:
    if t.variant is not None and os.path.exists(t.done):
      with open(t.done) as f:
        summary = json.load(f)
      if "final" in summary:
        runs.setdefault(t.variant, {})[t.seed] = summary
        dirs.setdefault(t.variant, {})[t.seed] = t.workdir
  if not runs:
    return None
  result = table.aggregate(runs)
  result["curves"] = table.curves(dirs)
  settings = {name: f"`{spec}` {overrides}".strip() for name, spec, overrides in config.variants}
  result["paired"] = paired.compare(result, paired.claims(config.paired))
  text = table.markdown(result, settings) + "\n" + paired.markdown(result["paired"])
  for name, content in ((table.TABLE_NAME, text), (table.JSON_NAME, json.dumps(result, indent=1))):
    files.write_text(os.path.join(workdir, name), content)
  table.save_figure(table.frontier_figure(result), os.path.join(workdir, table.PLOT_NAME))
  start = result["rows"][0]
  table.save_figure(table.curves_figure(result["curves"], {"eval_accuracy": start["accuracy"],
                                                           "eval_tpf": start["tpf"]}),
                    os.path.join(workdir, table.CURVES_NAME))
  return text


def check_args(argv: list[str]) -> None:
  """Exit 2 with one `error:` line when --config is missing or unloadable, or an override names no key of it."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  if spec is None:
    return
  try:
    keys = plan.keys(plan.load_config(spec))
  except (plan.PlanError, ValueError) as e:
    sys.exit(print(f"error: config: {e}", file=sys.stderr) or 2)
  for arg in argv:
    key = arg[len("--config."):].split("=", 1)[0] if arg.startswith("--config.") else None
    if key is not None and key not in keys:
      sys.exit(print(f"error: config.{key}: unknown key of {spec} (keys: {', '.join(keys)})", file=sys.stderr) or 2)


def main(argv) -> None:
  del argv
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  try:
    tasks = plan.tasks(config, workdir)
    slots = scheduler.core_slots(config.workers, config.cores)
  except plan.PlanError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except ValueError as e:
    print(f"error: cores: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{len(tasks)} tasks on {len(slots)} slots {slots} -> {workdir}", flush=True)
  cache = os.path.abspath(os.path.join(workdir, "jax_cache")) if config.compile_cache else ""
  status = scheduler.run(tasks, slots, log=lambda line: print(line, flush=True), compile_cache=cache)
  text = report(config, tasks, workdir)
  if text:
    print(text)
  bad = [t for t in tasks if status.get(t.name, "done") != "done"]
  for t in bad:
    print(f"{t.name}: {status[t.name]} (see {os.path.join(t.workdir, 'run.log')})", file=sys.stderr)
  sys.exit(1 if bad else 0)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "comparison config (configs/compare.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "output directory (warm starts, runs, table, plots)")
  flags.mark_flags_as_required(["config", "workdir"])
  check_args(sys.argv[1:])
  app.run(main)
