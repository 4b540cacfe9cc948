"""Evaluate checkpoints: `python -m lrl_jax.eval --config configs/eval.py --workdir W [--config.checkpoints=A,B]`.

Sweeps thresholds (and block sizes) on each dataset and writes W/eval_results.json (every point, AUP per dataset,
the config and device), W/samples.jsonl (one line per response), W/eval_curves.png and W/eval_table.md, then prints
the table. A bad config, checkpoint or dataset is one `error:` line on stderr and exit code 2, before any decoding.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from lrl_jax.defaults import check_overrides
from lrl_jax.data import DataFormatError
from lrl_jax.decode import DecodeError
from lrl_jax.eval_sweep import EvalError, device_name, make_plan, sweep
from lrl_jax.evaluation import report
from lrl_jax.model import ConfigError
from lrl_jax.rewards import Judge, JudgeConfig
from lrl_jax.weights import WeightsError


SAMPLES_NAME = "samples.jsonl"
USER_ERRORS = (EvalError, DecodeError, ConfigError, WeightsError, DataFormatError)


def run(config, workdir: str) -> dict[str, Any]:
  """Validate the config, sweep every checkpoint and write the four outputs into workdir; return the results."""
  plan = make_plan(config)
  os.makedirs(workdir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f".{SAMPLES_NAME}.", suffix=".tmp")
  judge_cfg = JudgeConfig(workers=config.reward.workers or None, math_timeout_s=config.reward.math_timeout)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as samples, Judge(judge_cfg) as judge:
      runs = sweep(plan, judge, samples, config.progress)
    resolved = {"dataset_files": {d.key: d.path for d in plan.datasets},
                "stop_ids": {c.path: list(c.decode_configs[0].stop_ids) for c in plan.checkpoints}}
    results = report.build_results(runs, {**config.to_dict(), "resolved": resolved}, device_name(),
                                   y_max_override=plan.y_max)
    report.write_report(results, workdir)
    os.chmod(tmp, 0o644)
    os.replace(tmp, Path(workdir) / SAMPLES_NAME)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return results


def cli(config, workdir: str) -> int:
  """`run`, printing the table on success and one `error:` line (exit code 2) for a user error."""
  try:
    results = run(config, workdir)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report.markdown_table(results))
  names = (report.RESULTS_NAME, SAMPLES_NAME, report.PLOT_NAME, report.TABLE_NAME)
  print(f"wrote {', '.join(os.path.join(workdir, n) for n in names)}")
  return 0


def main(argv) -> int:
  del argv
  logging.set_verbosity(logging.WARNING)
  return cli(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":  # flags are defined only when run as a program, so modules can import each other
  config_flags.DEFINE_config_file("config", None, "config file (configs/eval.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "output directory (created if missing)")
  flags.mark_flags_as_required(["config", "workdir"])
  check_overrides(sys.argv)
  app.run(main)
