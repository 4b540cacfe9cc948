"""Evaluate checkpoints: `python -m lrl_jax.eval --config=configs/eval.py --workdir=W [--config.checkpoints=A,B]`.

Checkpoints are HF or Orbax model dirs or training run dirs (their newest checkpoint). Sweeps thresholds (and block
sizes) on each dataset (sample names, files, or `demo`) and writes W/eval_results.json (every point, AUP per
dataset, the config and device), W/samples.jsonl (one line per response), W/eval_curves.png and W/eval_table.md, then
prints the table. A bad config, checkpoint or dataset is one `error:` line on stderr and exit code 2, before any
decoding.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags, logging
from ml_collections import config_flags

from lrl_jax import cli, files
from lrl_jax.evaluation import report

PROG = "python -m lrl_jax.eval"
SAMPLES_NAME = "samples.jsonl"
OUTPUTS = (report.RESULTS_NAME, SAMPLES_NAME, report.PLOT_NAME, report.TABLE_NAME)


def run(config, workdir: str) -> dict[str, Any]:
  """Validate the config, sweep every checkpoint and write the four outputs into workdir; return the results."""
  from lrl_jax.evaluation.sweep import device_name, make_plan, sweep
  from lrl_jax.rewards import Judge, JudgeConfig

  plan = make_plan(config)
  os.makedirs(workdir, exist_ok=True)
  judge_cfg = JudgeConfig(workers=config.reward.workers or None, math_timeout_s=config.reward.math_timeout)
  with files.atomic_file(os.path.join(workdir, SAMPLES_NAME)) as samples, Judge(judge_cfg) as judge:
    runs = sweep(plan, judge, samples, config.progress)
    resolved = {"dataset_files": {d.key: d.path for d in plan.datasets},
                "stop_ids": {c.path: list(c.decode_configs[0].stop_ids) for c in plan.checkpoints}}
    results = report.build_results(runs, {**config.to_dict(), "resolved": resolved}, device_name(),
                                   y_max_override=plan.y_max)
    report.write_report(results, workdir)
  return results


def execute(config, workdir: str, debug: bool = False) -> int:
  """`run`, then print the table (0); a user error prints one `error:` line instead (2)."""
  def body(_):
    results = run(config, workdir)
    print(report.markdown_table(results))
    print(f"wrote {', '.join(os.path.join(workdir, n) for n in OUTPUTS)}")

  return cli.call(body, None, debug)


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file("config", None, "config file (configs/eval.py)", flag_values=fv, lock_config=True)
  flags.DEFINE_string("workdir", None, "output directory (created if missing)", flag_values=fv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)


def _main(fv: flags.FlagValues) -> int:
  logging.set_verbosity(logging.WARNING)
  return execute(fv.config, fv.workdir, fv.debug)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _main, argv, PROG, __doc__, config_flags=("config",))


if __name__ == "__main__":
  cli.program(main)
