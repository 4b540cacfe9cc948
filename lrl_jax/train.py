"""RL post-training: `python -m lrl_jax.train --config configs/NAME.py --workdir W [--config.x.y=v]`.

Rerunning the same command resumes from the newest checkpoint in W. Writes W/metrics.jsonl (and TensorBoard),
W/summary.json (start vs final policy: accuracy %, TPF, AUP) and prints a summary table.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from lrl_jax.defaults import check_overrides
from lrl_jax.metrics import MetricWriter, summary_table
from lrl_jax.rl.trainer import Trainer


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def run(config, workdir: str) -> dict:
  """Train (or resume) to config.train.steps and return the summary written to workdir/summary.json."""
  start = time.perf_counter()
  trainer = Trainer(config, workdir)
  wall0 = trainer.wall
  writer = MetricWriter(workdir, config.logging.tensorboard,
                        config.logging.wandb_project if config.logging.wandb else None, config.to_dict())
  thresholds = tuple(config.eval.thresholds)
  if trainer.start_eval is None and trainer.eval_prompts:
    trainer.start_eval = trainer.evaluate(trainer.params, thresholds)
  bar = tqdm(total=config.train.steps, initial=trainer.step, desc=config.algorithm, disable=not config.train.progress)
  while trainer.step < config.train.steps:
    metrics = trainer.rl_step()
    bar.update(1)
    bar.set_postfix(acc=f"{metrics['correct_ratio']:.2f}", tpf=f"{metrics['tpf_dataset']:.2f}")
    every = config.train.eval_every
    if every and trainer.step % every == 0 and trainer.step < config.train.steps and trainer.eval_prompts:
      ev = trainer.evaluate(trainer.params, thresholds[:1])
      metrics.update(eval_accuracy=ev["accuracy"], eval_tpf=ev["tpf"])
    trainer.wall = wall0 + time.perf_counter() - start
    writer.write(trainer.step, metrics)
    if trainer.step % config.train.checkpoint_every == 0 or trainer.step == config.train.steps:
      trainer.save()
    export = config.train.export_hf_every
    if export and trainer.step % export == 0:
      trainer.export_hf(os.path.join(workdir, f"hf_step{trainer.step}"))
  bar.close()
  summary = {"algorithm": config.algorithm, "steps": trainer.step}
  if trainer.eval_prompts:
    final = trainer.evaluate(trainer.params, thresholds)
    y_max = max(p["accuracy"] for r in (trainer.start_eval, final) for p in r["points"])
    for name, res in (("start", trainer.start_eval), ("final", final)):
      summary[name] = {"accuracy": res["accuracy"], "tpf": res["tpf"], "aup": trainer.aup_of(res, y_max),
                       "points": res["points"]}
    summary["y_max"] = y_max
  summary["wall_seconds"] = wall0 + time.perf_counter() - start
  _write_json(os.path.join(workdir, "summary.json"), summary)
  writer.close()
  trainer.checkpoints.close()
  if trainer.eval_prompts:
    print(summary_table({k: summary[k] for k in ("start", "final")}, ("accuracy", "tpf", "aup")))
  print(f"{config.algorithm}: {trainer.step} steps, {summary['wall_seconds']:.0f}s -> {workdir}/summary.json")
  return summary


def main(argv) -> None:
  del argv
  if flags.FLAGS.distributed:
    jax.distributed.initialize()
  logging.set_verbosity(logging.WARNING)
  run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":  # flags are defined only when run as a program, so modules can import each other
  config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, summary)")
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
  flags.mark_flags_as_required(["config", "workdir"])
  check_overrides(sys.argv)
  app.run(main)
