"""The training loop: RL steps to config.train.steps with the eval cadence, metrics, checkpoints, HF exports and the
wall clock, then W/final, the start-vs-final eval (W/summary.json) and the printed summary.

The loop owns what it saves beside the trainer's state (`trainer.Saved`: the start policy's eval and the training
seconds so far), so a resumed run continues its clock and compares against the same start.
"""

from __future__ import annotations

import os
import time

from tqdm import tqdm

from lrl_jax import files
from lrl_jax.evaluation import aup as aup_lib
from lrl_jax.parallel import multihost
from lrl_jax.run.metrics import MetricWriter, summary_table
from lrl_jax.run.trainer import Saved, Trainer


def train(config, workdir: str) -> dict:
  """Train (or resume) to config.train.steps; return the summary written to workdir/summary.json. `config` must
  have passed `run.validate.validate`."""
  try:
    trainer = Trainer(config, workdir)
  except Exception as e:
    multihost.exit_now(e)
    raise
  try:
    return _loop(config, workdir, trainer)
  except Exception as e:
    multihost.exit_now(e, cleanup=[trainer.rollouts.close])  # a multi-process run ends here, without waiting on peers
    raise
  finally:
    trainer.close()


def _aup(result: dict, y_max: float) -> float:
  return aup_lib.aup([(p["tpf"], p["accuracy"]) for p in result["points"]], y_max)


def _loop(config, workdir: str, trainer: Trainer) -> dict:
  start = time.perf_counter()
  main = multihost.is_main()  # the one process that writes metrics and the summary
  writer = None
  try:
    first_step, wall0, start_eval = trainer.step, trainer.resumed.wall_seconds, trainer.resumed.start_eval
    final_dir = os.path.join(workdir, "final")
    need_final = not os.path.isdir(final_dir)  # decided before anyone writes it: every process calls write_final
    if main:
      writer = MetricWriter(workdir, config.logging.tensorboard,
                            config.logging.wandb_project if config.logging.wandb else None, config.to_dict(),
                            start_step=trainer.step)
    thresholds = tuple(config.eval.thresholds)
    if start_eval is None and trainer.eval_prompts:
      start_eval = trainer.evaluate(trainer.params, thresholds)
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
      wall = wall0 + time.perf_counter() - start
      if writer is not None:
        writer.write(trainer.step, metrics)
      trainer.maybe_kill("metrics")
      if trainer.step % config.train.checkpoint_every == 0 or trainer.step == config.train.steps:
        trainer.save(Saved(start_eval, wall))
      export = config.train.export_hf_every
      if export and trainer.step % export == 0:
        trainer.export_hf(os.path.join(workdir, f"hf_step{trainer.step}"))
    bar.close()
    if trainer.step > first_step or need_final:
      final_dir = trainer.write_final()
    summary = {"algorithm": config.algorithm, "steps": trainer.step, "final_model": final_dir}
    if trainer.eval_prompts:
      final = trainer.evaluate(trainer.params, thresholds)
      y_max = max(p["accuracy"] for r in (start_eval, final) for p in r["points"])
      for name, res in (("start", start_eval), ("final", final)):
        summary[name] = {"accuracy": res["accuracy"], "tpf": res["tpf"], "aup": _aup(res, y_max),
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
