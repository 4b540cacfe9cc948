"""RL post-training: `python -m lrl_jax.train --config=configs/NAME.py --workdir=W [--config.x.y=v]`.

The whole config is validated before any work. Rerunning the same command resumes from the newest checkpoint in W
that restores. Writes W/metrics.jsonl (and TensorBoard), W/final/ (an Orbax model dir of the trained policy, for
eval/generate/convert), W/summary.json (start vs final policy: accuracy %, TPF, AUP) and prints a summary table.
A user error is one `error:` line and exit code 2 (lrl_jax/cli.py). The run itself is lrl_jax/run/ (loop.py).

Multi-process: start one process per host (or per device group) with `--distributed` and either
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or LRL_COORDINATOR_ADDRESS, LRL_NUM_PROCESSES,
LRL_PROCESS_ID) or nothing more on SLURM / Open MPI / TPU pods; every process gets the same config and workdir (a
shared filesystem). Only process 0 writes metrics, summary.json and final/; a process whose peer dies stops with one
`error:` line (lrl_jax/parallel/multihost.py).
"""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

from lrl_jax import cli
from lrl_jax.run.validate import validate
from lrl_jax.errors import UserError
from lrl_jax.parallel import multihost

PROG = "python -m lrl_jax.train"


def check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir: {workdir}: exists and is not a directory")


def run(config, workdir: str) -> dict:
  """Validate, then train (or resume) to config.train.steps; return the summary written to workdir/summary.json."""
  validate(config)
  check_workdir(workdir)
  from lrl_jax.run.loop import train
  return train(config, workdir)


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file("config", None, "config file (configs/*.py[:ARG])", flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, final model, summary)", flag_values=fv)
  multihost.define_flags(fv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  start = multihost.settings(fv.distributed, fv.coordinator_address, fv.num_processes, fv.process_id)
  if start is not None:
    multihost.initialize(start)
  logging.set_verbosity(logging.WARNING)
  run(fv.config, fv.workdir)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _main, argv, PROG, __doc__, config_flags=("config",))


if __name__ == "__main__":
  cli.program(main)
