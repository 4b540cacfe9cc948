"""Warm start only: `python -m lrl_jax.sft --config=configs/NAME.py --workdir=W` writes the model dir W/warmstart.

SDAR's block-diffusion objective on the demo's reference solutions (lrl_jax/run/warm_start.py); `train` runs the same
warm start itself when `warm_start.steps > 0` and reuses W/warmstart when it exists.
"""

from __future__ import annotations

from absl import flags, logging
from ml_collections import config_flags

from lrl_jax import cli
from lrl_jax.run.validate import validate
from lrl_jax.errors import UserError

PROG = "python -m lrl_jax.sft"


def define_flags(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file("config", None, "config file (configs/*.py[:ARG])", flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "output directory (the model dir is written to WORKDIR/warmstart)",
                      flag_values=fv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  logging.set_verbosity(logging.WARNING)
  config = fv.config
  validate(config)
  if not config.warm_start.steps:
    raise UserError("config.warm_start.steps: is 0; set the number of warm-start steps")
  from lrl_jax.run import wiring
  from lrl_jax.run.warm_start import warm_start
  cfg, params, tok, stops = wiring.model_from_config(config)
  warm_start(config, fv.workdir, cfg, params, tok, stops, *wiring.warm_start_data(config, tok),
             progress=config.train.progress)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, _main, argv, PROG, __doc__, config_flags=("config",))


if __name__ == "__main__":
  cli.program(main)
