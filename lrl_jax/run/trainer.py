"""One training run in W (SPEC §7): the learner, the engines and judge, the data cursor and the checkpoints.

`rl_step` is one RL step: rollouts → rewards → shaping/filtering (with refill rounds) → advantages → the learner's
update. State that makes a run resumable (params, optimizer state, step, data cursor, and what the loop keeps:
`Saved`) is checkpointed; every random draw derives from (seed, step), so a resumed run repeats an uninterrupted
one exactly. A damaged newest checkpoint is skipped for the one before it; a non-finite loss or gradient norm stops
the run before the update is applied, and non-finite weights are never saved.

Multi-process runs (parallel/multihost.py): each process decodes and judges its contiguous share of the step's prompt
groups on its own devices (response i still samples stream i, so tokens equal a one-process run's), then every
process shapes the whole step from the exchanged rewards and the learner trains on the kept responses with the whole
batch's totals. The warm start runs on process 0; checkpoints are written by all processes together (Orbax); model
dirs are written by process 0.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable

import jax
import numpy as np

from lrl_jax.run import wiring
from lrl_jax.data.sampler import PromptSampler
from lrl_jax.checks import ConfigValueError
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.parallel import multihost
from lrl_jax.rl import guards, learner, refill, rollout, shaping
from lrl_jax.run import setup
from lrl_jax.run.checkpoints import Checkpoints, export_hf_dir, write_final_dir
from lrl_jax.run.rollouts import Rollouts
from lrl_jax.weights.run_dir import FINAL_DIR


@dataclasses.dataclass(frozen=True)
class Saved:
  """What the training loop keeps in each checkpoint beside the trainer's step and data cursor: the start policy's
  eval (None until it ran) and the training seconds so far."""
  start_eval: dict | None = None
  wall_seconds: float = 0.0


class Trainer:
  """Owns the learner, data cursor, engines, judge and checkpoints of one run in `workdir`."""

  def __init__(self, config, workdir: str):
    """`config` must have passed `run.validate.validate`; data and prompts are checked before the warm start."""
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = mesh_lib.make_mesh(**config.mesh)
    rollout_mesh = setup.rollout_mesh(config, self.mesh)
    cfg, params, tok, stops = wiring.model_from_config(config)
    if cfg.is_moe:  # the rollout splits experts over fsdp too: it must lie within a process as well
      setup.rollout_mesh(config, self.mesh, moe=True)
    self.data = setup.data(config, tok, cfg)
    model = setup.starting_model(config, workdir, cfg, params, tok, stops)  # its params live on in the learner only
    self.cfg, self.tokenizer, self.model_files = model.cfg, model.tokenizer, model.model_files
    self.shaping_cfg, loss_cfg = wiring.algorithm_configs(config)
    self.sampler = PromptSampler(len(self.data.train_records), config.data.shuffle_seed)
    # Called with the phase's name at each boundary (reshard, rollout, logprobs, micro_grads, apply, eval/reshard,
    # eval, save, export): tests read the live device bytes there against `plan`'s timeline (plan/timeline.py).
    self.on_phase: Callable[[str], None] | None = None
    self.step = 0
    hooks = learner.Hooks(self._phase, lambda: self.maybe_kill("update"), self.last_good)
    self.learner = setup.make_learner(config, model, self.mesh, self.shaping_cfg.logp_mode, loss_cfg, hooks)
    r = config.rollout
    self.max_prompt_len = r.max_prompt_len or max(len(p) for p in self.data.train_prompts + self.data.eval_prompts)
    self.rollouts = Rollouts(config, self.cfg, self.tokenizer, model.stops, self.mesh, rollout_mesh,
                             jax.eval_shape(lambda p: p, model.params), self.max_prompt_len, self._phase)
    self.checkpoints = Checkpoints(workdir, config.train.keep_last, config.train.keep_every)
    try:
      self.resumed = self._restore()
    except BaseException as e:
      multihost.exit_now(e, cleanup=[self.rollouts.close])
      self.close()
      raise

  @property
  def params(self):
    """The current policy (float32, sharded on the training mesh)."""
    return self.learner.params

  @property
  def eval_prompts(self) -> list[list[int]]:
    return self.data.eval_prompts

  def _phase(self, name: str) -> None:
    if self.on_phase is not None:
      self.on_phase(name)

  # ---- checkpoints -------------------------------------------------------------------------------------------
  def _restore(self) -> Saved:
    """Resume from the newest checkpoint that restores (a damaged newer one is named and set aside); what the loop
    saved with it (nothing yet: `Saved()`)."""
    found = self.checkpoints.restore_newest(self.learner.state_target(), check=self._check_meta)
    if found is None:
      return Saved()
    _, state, meta = found
    self.learner.load(state)
    self.step = meta["step"]
    try:
      self.sampler.restore(meta["data_cursor"])
    except ValueError as e:
      raise ConfigValueError(f"config.data: {e}; this run directory belongs to another dataset") from None
    return Saved(meta["start_eval"], meta["wall_seconds"])

  @staticmethod
  def _check_meta(meta: dict) -> None:
    missing = [k for k in ("step", "start_eval", "wall_seconds", "data_cursor") if k not in meta]
    if missing or not isinstance(meta["step"], int):
      raise KeyError(f"meta lacks {missing or ['an integer step']}")

  def last_good(self) -> str:
    """The newest saved checkpoint (for messages), or a note that there is none."""
    latest = self.checkpoints.latest_step()
    return self.checkpoints.step_dir(latest) if latest is not None else "none (no step was saved)"

  def save(self, saved: Saved = Saved()) -> None:
    """Checkpoint the state after `self.step` with the loop's `saved`; non-finite weights stop the run instead
    (NonFiniteError)."""
    state = self.learner.state()
    if not bool(multihost.host(guards.all_finite(state))):
      raise guards.NonFiniteError(f"step {self.step}: non-finite weights or optimizer state; not saved; last good "
                                  f"checkpoint: {self.last_good()}")
    meta = {"step": self.step, "data_cursor": self.sampler.state(), "start_eval": saved.start_eval,
            "wall_seconds": saved.wall_seconds, "seed": self.config.seed, "config": self.config.to_dict()}
    self.checkpoints.save(self.step, state, meta, during=lambda: self.maybe_kill("save"))
    self.maybe_kill("saved")
    self._phase("save")

  def write_final(self) -> str:
    """The current policy as an Orbax model dir W/final (config and tokenizer from W/model_files), written shard by
    shard by every process."""
    out = os.path.join(self.workdir, FINAL_DIR)
    write_final_dir(self.params, out, self.model_files)
    return out

  def export_hf(self, out_dir: str) -> None:
    """The current policy as an HF model dir (config and tokenizer from W/model_files), streamed piece by piece."""
    export_hf_dir(self.params, self.cfg, out_dir, self.model_files)
    self._phase("export")

  def maybe_kill(self, phase: str) -> None:
    """Fault injection for resume tests: config.debug.kill_at = "PHASE@STEP" SIGKILLs this process there
    (defaults.KILL_PHASES: rollout, update, metrics, save = while the checkpoint is written, saved = after it)."""
    if self.config.debug.kill_at == f"{phase}@{self.step}":
      os.kill(os.getpid(), signal.SIGKILL)

  def close(self) -> None:
    """Finish pending checkpoint writes and stop the judge's workers."""
    self.checkpoints.close()
    self.rollouts.close()

  # ---- one RL step ---------------------------------------------------------------------------------------------
  def evaluate(self, params, thresholds) -> dict[str, Any]:
    """The eval set decoded greedily at each threshold (Rollouts.evaluate)."""
    return self.rollouts.evaluate(params, self.data.eval_prompts, self.data.eval_records, thresholds)

  def _draw(self, num: int) -> tuple[list, list]:
    """(prompts, records) of `num` more prompts from the sampler, each repeated for its G responses."""
    g = self.config.rollout.num_responses
    idx = self.sampler.next(num)
    return ([self.data.train_prompts[i] for i in idx for _ in range(g)],
            [self.data.train_records[i] for i in idx for _ in range(g)])

  def rl_step(self) -> dict[str, float]:
    c, timings = self.config, {}
    t0 = time.perf_counter()
    n, g = c.rollout.num_prompts, c.rollout.num_responses
    prompts, data = self._draw(n)
    group = np.repeat(np.arange(n), g)
    responses, correct = self.rollouts.roll(self.params, prompts, data, c.seed * 1_000_003 + self.step,
                                            self.step + 1, timings)
    self.maybe_kill("rollout")
    timings["time_rollout"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    tpf = _tpf(responses)
    if c.rl.resample_filtered:  # accept-reject refill of filtered groups (rl/refill.py); time_reward includes it
      t = time.perf_counter()
      merged, rounds = refill.refill(refill.Round(group, responses, data, correct, tpf), self._refill_round,
                                     self.shaping_cfg, n)
      group, responses, data, correct, tpf = merged.group, merged.records, merged.data, merged.correct, merged.tpf
      timings.update(time_refill=time.perf_counter() - t, refill_rounds=float(rounds))
    shaped = shaping.shape(group, correct, tpf, self.shaping_cfg, rollout.graded(data))  # math: +-1 unnormalised
    metrics = shaping.metrics(shaped, correct, tpf)
    metrics["tpf_dataset"] = sum(r.length for r in responses) / max(1, sum(r.forwards for r in responses))
    metrics["truncated_frac"] = float(np.mean([r.truncated for r in responses]))
    timings["time_reward"] = time.perf_counter() - t1
    kept = np.flatnonzero(shaped.keep)
    if len(kept):
      update = self.learner.update(self.step + 1, [responses[k] for k in kept], shaped.advantages[kept],
                                   correct[kept] >= 1.0)
      metrics.update(update.metrics)
      timings.update(update.timings)
    self.step += 1
    return {**metrics, **timings, "kept_responses": float(len(kept))}

  def _refill_round(self, round_index: int, num: int) -> refill.Round:
    """`num` more prompts, G responses each from the round's own random stream, judged (rl.resample_filtered)."""
    prompts, data = self._draw(num)
    responses, correct = self.rollouts.roll(self.params, prompts, data,
                                            refill.rollout_seed(self.config.seed, self.step, round_index),
                                            self.step + 1, {})
    return refill.Round(np.repeat(np.arange(num), self.config.rollout.num_responses), responses, data, correct,
                        _tpf(responses))


def _tpf(responses: list[rollout.Response]) -> np.ndarray:
  """Tokens per forward [n] of each response."""
  return np.asarray([r.length / max(r.forwards, 1) for r in responses])
