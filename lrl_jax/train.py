"""RL post-training: `python -m lrl_jax.train --config=configs/NAME.py --workdir=W [--config.x.y=v]`.

The whole config is validated before any work. Rerunning the same command resumes from the newest checkpoint in W
that restores. Writes W/metrics.jsonl (and TensorBoard), W/final/ (an Orbax model dir of the trained policy, for
eval/generate/convert), W/summary.json (start vs final policy: accuracy %, TPF, AUP) and prints a summary table.
A user error is one `error:` line and exit code 2 (lrl_jax/cli.py).

Multi-process: start one process per host (or per device group) with `--distributed` and either
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or LRL_COORDINATOR_ADDRESS, LRL_NUM_PROCESSES,
LRL_PROCESS_ID) or nothing more on SLURM / Open MPI / TPU pods; every process gets the same config and workdir (a
shared filesystem). Only process 0 writes metrics, summary.json and final/; a process whose peer dies stops with one
`error:` line (lrl_jax/parallel/multihost.py).
"""

from __future__ import annotations

import os
import time

from absl import flags, logging
from ml_collections import config_flags

from lrl_jax import cli, files
from lrl_jax.defaults import validate
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
  from lrl_jax.rl.trainer import Trainer

  try:
    trainer = Trainer(config, workdir)
  except Exception as e:
    multihost.exit_now(e)
    raise
  try:
    return _train(config, workdir, trainer)
  except Exception as e:
    multihost.exit_now(e, cleanup=[trainer.judge.close])  # a multi-process run ends here, without waiting on peers
    raise
  finally:
    trainer.close()


def _train(config, workdir: str, trainer) -> dict:
  from tqdm import tqdm

  from lrl_jax.metrics import MetricWriter, summary_table

  start = time.perf_counter()
  main = multihost.is_main()  # the one process that writes metrics and the summary
  writer = None
  try:
    first_step, wall0 = trainer.step, trainer.wall
    final_dir = os.path.join(workdir, "final")
    need_final = not os.path.isdir(final_dir)  # decided before anyone writes it: every process calls write_final
    if main:
      writer = MetricWriter(workdir, config.logging.tensorboard,
                            config.logging.wandb_project if config.logging.wandb else None, config.to_dict(),
                            start_step=trainer.step)
    thresholds = tuple(config.eval.thresholds)
    if trainer.start_eval is None and trainer.eval_prompts:
      trainer.start_eval = trainer.evaluate(trainer.params, thresholds)
    bar = tqdm(total=config.train.steps, initial=trainer.step, desc=config.algorithm,
               disable=not (config.train.progress and main))
    while trainer.step < config.train.steps:
      metrics = trainer.rl_step()
      bar.update(1)
      bar.set_postfix(acc=f"{metrics['correct_ratio']:.2f}", tpf=f"{metrics['tpf_dataset']:.2f}")
      every = config.train.eval_every
      if every and trainer.step % every == 0 and trainer.step < config.train.steps and trainer.eval_prompts:
        ev = trainer.evaluate(trainer.params, thresholds[:1])
        metrics.update(eval_accuracy=ev["accuracy"], eval_tpf=ev["tpf"])
      trainer.wall = wall0 + time.perf_counter() - start
      if writer is not None:
        writer.write(trainer.step, metrics)
      trainer.maybe_kill("metrics")
      if trainer.step % config.train.checkpoint_every == 0 or trainer.step == config.train.steps:
        trainer.save()
      export = config.train.export_hf_every
      if export and trainer.step % export == 0:
        trainer.export_hf(os.path.join(workdir, f"hf_step{trainer.step}"))
    bar.close()
    if trainer.step > first_step or need_final:
      final_dir = trainer.write_final()
    summary = {"algorithm": config.algorithm, "steps": trainer.step, "final_model": final_dir}
    if trainer.eval_prompts:
      final = trainer.evaluate(trainer.params, thresholds)
      y_max = max(p["accuracy"] for r in (trainer.start_eval, final) for p in r["points"])
      for name, res in (("start", trainer.start_eval), ("final", final)):
        summary[name] = {"accuracy": res["accuracy"], "tpf": res["tpf"], "aup": trainer.aup_of(res, y_max),
                         "points": res["points"]}
      summary["y_max"] = y_max
    summary["wall_seconds"] = wall0 + time.perf_counter() - start
    if main:
      files.write_json(os.path.join(workdir, "summary.json"), summary)
  finally:
    if writer is not None:
      writer.close()
  if main:
    if trainer.eval_prompts:
      print(summary_table({k: summary[k] for k in ("start", "final")}, ("accuracy", "tpf", "aup")))
    print(f"{config.algorithm}: {trainer.step} steps, {summary['wall_seconds']:.0f}s -> {workdir}/summary.json, "
          f"policy in {final_dir}")
  return summary


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
