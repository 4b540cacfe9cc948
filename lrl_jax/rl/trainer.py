"""The RL loop (SPEC §7): rollouts → rewards → shaping/filtering → advantages → logp_old/ref → one pass of updates.

State that makes a run resumable — params, optimizer state, step, data cursor — is checkpointed after each
step; every random draw derives from (seed, step), so a resumed run repeats an uninterrupted one exactly. A damaged
newest checkpoint is skipped for the one before it; a non-finite loss or gradient norm stops the run before the
update is applied, and non-finite weights are never saved.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lrl_jax import wiring
from lrl_jax.checkpoints import FINAL_DIR, MODEL_FILES_DIR, Checkpoints
from lrl_jax.data import templates
from lrl_jax.data.sampler import PromptSampler
from lrl_jax.decode import Decoder
from lrl_jax.defaults import ConfigValueError
from lrl_jax.evaluation import aggregate
from lrl_jax.evaluation import aup as aup_lib
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.rewards import Judge, JudgeConfig, is_truncated
from lrl_jax.rl import batch as batch_lib
from lrl_jax.rl import guards, layout, losses, optim, refill, rollout, shaping, step as step_lib
from lrl_jax.rl.warm_start import warm_start
from lrl_jax.weights import load_checkpoint, write_hf_dir, write_orbax_dir


class Trainer:
  """Owns the model state, data cursor, decoders and judge of one run in `workdir`."""

  def __init__(self, config, workdir: str):
    """`config` must have passed `defaults.validate`; data and prompts are checked before the warm start."""
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = mesh_lib.make_mesh(**config.mesh)
    self.train_records, self.eval_records = wiring.train_records(config), wiring.eval_records(config)
    cfg, params, tok, stops = wiring.model_from_config(config)
    self.train_prompts = templates.prompt_ids(self.train_records, tok)
    self.eval_prompts = templates.prompt_ids(self.eval_records, tok)
    for key, prompts in (("data.train", self.train_prompts), ("data.eval", self.eval_prompts)):
      wiring.check_prompt_lengths(key, prompts, config.rollout.max_new_tokens, cfg)
    self.model_dir = config.model.checkpoint or None
    if config.warm_start.steps:
      self.model_dir = warm_start(config, workdir, cfg, params, tok, stops, *wiring.warm_start_data(config, tok),
                                  progress=config.train.progress)
      cfg, params, tok = load_checkpoint(self.model_dir, dtype=jnp.float32)
    self.cfg, self.tokenizer, self.stops = cfg, tok, stops
    self.model_files = os.path.join(workdir, MODEL_FILES_DIR)
    if not os.path.isdir(self.model_files):
      src = wiring.model_files_dir(self.model_dir) if self.model_dir else None
      wiring.write_model_files(self.model_files, cfg, tok, stops, src)
    self.shaping_cfg, self.loss_cfg = wiring.algorithm_configs(config)
    self.sampler = PromptSampler(len(self.train_records), config.data.shuffle_seed)
    self.judge = Judge(JudgeConfig(workers=config.reward.workers or None, math_timeout_s=config.reward.math_timeout))

    self.optimizer = optim.make_optimizer(**config.optim)
    shapes = jax.eval_shape(lambda p: p, params)
    self.p_shard = mesh_lib.param_shardings(cfg, shapes, self.mesh)
    self.o_shard = mesh_lib.opt_state_shardings(self.optimizer, shapes, self.p_shard, self.mesh)
    self.params = jax.device_put(params, self.p_shard)
    self.opt_state = jax.jit(self.optimizer.init, out_shardings=self.o_shard)(self.params)
    self.ref_params = jax.tree.map(jnp.copy, self.params) if self.loss_cfg.kl_beta else None  # own buffers
    self.apply = step_lib.make_apply(self.optimizer, (self.p_shard, self.o_shard))
    r = config.rollout
    self.sc = step_lib.StepConfig(cfg, self.loss_cfg, config.rl.train_block_size or r.block_size, config.model.dtype,
                                  config.model.remat, config.model.q_chunk)
    self.max_prompt_len = r.max_prompt_len or max(len(p) for p in self.train_prompts + self.eval_prompts)
    self.decoder = self._decoder(wiring.rollout_decode_config(config, stops), r.batch_size)
    self.to_rollout = mesh_lib.to_rollout(cfg, shapes, self.mesh, jnp.dtype(self.decoder.dcfg.dtype))
    self._eval_decoders: dict[float, Decoder] = {}
    self.step, self.start_eval, self.wall = 0, None, 0.0
    self.checkpoints = Checkpoints(workdir, config.train.keep_last, config.train.keep_every)
    try:
      self._restore()
    except BaseException:
      self.close()
      raise

  # ---- checkpoints -------------------------------------------------------------------------------------------
  def _state(self) -> dict:
    return {"params": self.params, "opt_state": self.opt_state}

  def _restore(self) -> None:
    """Resume from the newest checkpoint that restores (a damaged newer one is named and set aside)."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self._state(),
                          {"params": self.p_shard, "opt_state": self.o_shard})
    found = self.checkpoints.restore_newest(target, check=self._check_meta)
    if found is None:
      return
    _, state, meta = found
    self.params, self.opt_state = state["params"], state["opt_state"]
    self.step, self.start_eval, self.wall = meta["step"], meta["start_eval"], meta["wall_seconds"]
    try:
      self.sampler.restore(meta["data_cursor"])
    except ValueError as e:
      raise ConfigValueError(f"config.data: {e}; this run directory belongs to another dataset") from None

  @staticmethod
  def _check_meta(meta: dict) -> None:
    missing = [k for k in ("step", "start_eval", "wall_seconds", "data_cursor") if k not in meta]
    if missing or not isinstance(meta["step"], int):
      raise KeyError(f"meta lacks {missing or ['an integer step']}")

  def last_good(self) -> str:
    """The newest saved checkpoint (for messages), or a note that there is none."""
    latest = self.checkpoints.latest_step()
    return self.checkpoints.step_dir(latest) if latest is not None else "none (no step was saved)"

  def save(self) -> None:
    """Checkpoint the state after `self.step`; non-finite weights stop the run instead (NonFiniteError)."""
    if not bool(guards.all_finite(self._state())):
      raise guards.NonFiniteError(f"step {self.step}: non-finite weights or optimizer state; not saved; last good "
                                  f"checkpoint: {self.last_good()}")
    meta = {"step": self.step, "data_cursor": self.sampler.state(), "start_eval": self.start_eval,
            "wall_seconds": self.wall, "seed": self.config.seed, "config": self.config.to_dict()}
    self.checkpoints.save(self.step, self._state(), meta, during=lambda: self.maybe_kill("save"))
    self.maybe_kill("saved")

  def write_final(self) -> str:
    """The current policy as an Orbax model dir W/final (config and tokenizer from W/model_files)."""
    out = os.path.join(self.workdir, FINAL_DIR)
    write_orbax_dir(jax.device_get(self.params), out, src_dir=self.model_files, overwrite=True)
    return out

  def export_hf(self, out_dir: str) -> None:
    """The current policy as an HF model dir (config and tokenizer from W/model_files)."""
    write_hf_dir(jax.device_get(self.params), self.cfg, out_dir, src_dir=self.model_files, overwrite=True)

  def maybe_kill(self, phase: str) -> None:
    """Fault injection for resume tests: config.debug.kill_at = "PHASE@STEP" SIGKILLs this process there
    (defaults.KILL_PHASES: rollout, update, metrics, save = while the checkpoint is written, saved = after it)."""
    if self.config.debug.kill_at == f"{phase}@{self.step}":
      os.kill(os.getpid(), signal.SIGKILL)

  def close(self) -> None:
    """Finish pending checkpoint writes and stop the judge's workers."""
    self.checkpoints.close()
    self.judge.close()

  # ---- rollouts and rewards ------------------------------------------------------------------------------------
  def _decoder(self, dcfg, slots: int) -> Decoder:
    """An engine with the run's rollout settings; slots and KV pages are split over the mesh's data axes."""
    r = self.config.rollout
    return Decoder(self.cfg, dcfg, slots, self.tokenizer, max_prompt_len=self.max_prompt_len,
                   pool_tokens=r.pool_tokens or None, page_size=r.page_size or None, fuse=r.fuse_commit,
                   forwards_per_call=r.forwards_per_call, mesh=self.mesh)

  def compute_params(self, params=None):
    """The policy in the rollout layout (compute dtype, replicated over the data axes, split over tensor)."""
    return self.to_rollout(self.params if params is None else params)

  def _rollout(self, prompts, data, seed: int, timings: dict) -> rollout.Rollout:
    """Reshard the policy, then decode and judge (overlapped); fills timing metrics."""
    t = time.perf_counter()
    params = jax.block_until_ready(self.compute_params())
    timings["time_reshard"] = timings.get("time_reshard", 0.0) + time.perf_counter() - t
    bar = tqdm(total=len(prompts), desc="rollout", unit="seq", leave=False, disable=not self.config.train.progress)

    def progress(info):
      bar.n = info["finished"]
      bar.set_postfix(live=info["live"], queued=info["queued"], tok_s=f"{info['tokens'] / max(info['seconds'], 1e-9):.0f}")

    try:
      out = rollout.decode_and_judge(self.decoder, params, prompts, data, self.judge, seed, progress)
    finally:
      bar.close()
    for k, v in out.timings.items():
      timings[k] = timings.get(k, 0.0) + v
    return out

  def score(self, records: list[dict], data: list) -> np.ndarray:
    """Correctness [n] (float; code: pass rate) of responses; truncated responses are wrong (SPEC §7.2)."""
    max_new = self.decoder.dcfg.max_new_tokens
    truncated = [is_truncated(len(r["response_ids"]), max_new) for r in records]
    results = self.judge.score(data, [r["text"] for r in records], truncated)
    return np.asarray([s["pass_rate"] for s in results], np.float64)

  def evaluate(self, params, thresholds) -> dict[str, Any]:
    """Greedy decoding of the eval set at each threshold: one `evaluation.aggregate` summary per threshold
    (accuracy %, TPF as a ratio of sums, ...); the first threshold's accuracy and TPF are the headline."""
    points = []
    for th in thresholds:
      if th not in self._eval_decoders:
        dcfg = wiring.rollout_decode_config(self.config, self.stops, greedy=True, threshold=th)
        self._eval_decoders[th] = self._decoder(dcfg, self.config.eval.batch_size)
      records = self._eval_decoders[th].generate(self.compute_params(params), self.eval_prompts)
      correct = self.score(records, self.eval_records) >= 1.0
      summary = aggregate.summarize([
          {"correct": bool(ok), "response_length": len(r["response_ids"]), "num_forwards": r["num_forwards"],
           "forwards_total": r["forwards_total"], "truncated": r["truncated"]} for r, ok in zip(records, correct)])
      points.append({"threshold": th, **summary})
    return {"points": points, "accuracy": points[0]["accuracy"], "tpf": points[0]["tpf"]}

  # ---- one RL step ---------------------------------------------------------------------------------------------
  def rl_step(self) -> dict[str, float]:
    c, timings = self.config, {}
    t0 = time.perf_counter()
    n, g = c.rollout.num_prompts, c.rollout.num_responses
    idx = self.sampler.next(n)
    prompts = [self.train_prompts[i] for i in idx for _ in range(g)]
    data = [self.train_records[i] for i in idx for _ in range(g)]
    group = np.repeat(np.arange(n), g)
    records, correct, _ = self._rollout(prompts, data, c.seed * 1_000_003 + self.step, timings)
    self.maybe_kill("rollout")
    timings["time_rollout"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    tpf = np.asarray([len(r["response_ids"]) / max(r["num_forwards"], 1) for r in records])
    if c.rl.resample_filtered:  # accept-reject refill of filtered groups (rl/refill.py); time_reward includes it
      t = time.perf_counter()
      (group, records, data, correct, tpf), rounds = refill.refill(
          refill.Round(group, records, data, correct, tpf), self._refill_round, self.shaping_cfg, n)
      timings.update(time_refill=time.perf_counter() - t, refill_rounds=float(rounds))
    shaped = shaping.shape(group, correct, tpf, self.shaping_cfg)
    metrics = shaping.metrics(shaped, correct, tpf)
    metrics["tpf_dataset"] = sum(len(r["response_ids"]) for r in records) / max(1, sum(r["num_forwards"] for r in records))
    metrics["truncated_frac"] = float(np.mean([r["truncated"] for r in records]))
    timings["time_reward"] = time.perf_counter() - t1
    kept = np.flatnonzero(shaped.keep)
    if len(kept):
      metrics.update(self._update([records[k] for k in kept], shaped.advantages[kept], correct[kept] >= 1.0,
                                  timings))
    self.step += 1
    return {**metrics, **timings, "kept_responses": float(len(kept))}

  def _refill_round(self, round_index: int, num: int) -> refill.Round:
    """`num` more prompts, G responses each from the round's own random stream, judged (rl.resample_filtered)."""
    g = self.config.rollout.num_responses
    idx = self.sampler.next(num)
    prompts = [self.train_prompts[i] for i in idx for _ in range(g)]
    data = [self.train_records[i] for i in idx for _ in range(g)]
    records, correct, _ = self._rollout(prompts, data, refill.rollout_seed(self.config.seed, self.step, round_index),
                                        {})
    tpf = np.asarray([len(r["response_ids"]) / max(r["num_forwards"], 1) for r in records])
    return refill.Round(np.repeat(np.arange(num), g), records, data, correct, tpf)

  def _update(self, records, advantages, correct, timings) -> dict[str, float]:
    """logp_old/ref once, then one pass of accumulated optimizer updates over the kept rows."""
    c = self.config
    t2 = time.perf_counter()
    micro = c.train.micro_batch_rows
    rows = batch_lib.training_rows(records, advantages, correct, mode=self.shaping_cfg.logp_mode,
                                   block_size=self.sc.block_size, shrink=c.rl.shrink,
                                   pad_id=self.tokenizer.pad_token_id or 0, row_multiple=micro,
                                   len_multiple=c.train.row_len_bucket)
    b = rows.batch
    sc = dataclasses.replace(self.sc, noisy_start=layout.noisy_start(b.noisy_masked, self.sc.block_size))
    with mesh_lib.activate(self.mesh):
      logp_old = self._logprobs(self.params, b, micro, sc)
      logp_ref = self._logprobs(self.ref_params, b, micro, sc) if self.ref_params is not None else logp_old
    gap = np.abs(np.where(b.scored, rows.sampler_logp - logp_old, 0.0))
    timings["time_logprobs"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    per = c.train.sequences_per_update
    num_updates = max(1, -(-len(records) // per)) if per else 1
    per_update, norms = [], []
    for idx in batch_lib.update_groups(b.row_to_seq, num_updates):
      grads = aux = None
      for mb in batch_lib.micro_batches(rows, idx, micro, self.loss_cfg, logp_old, logp_ref):
        mb = self._put(step_lib.MicroBatch(**mb))
        with mesh_lib.activate(self.mesh):
          if grads is None:
            grads, aux = step_lib.micro_grads(self.params, mb, sc=sc)
          else:
            grads, aux = step_lib.accumulate(self.params, grads, aux, mb, sc=sc)
        self.maybe_kill("update")
      update_metrics = losses.finalize_metrics(jax.device_get(aux))
      guards.check_update(self.step + 1, update_metrics["loss"], float(guards.global_norm(grads)), self.last_good())
      self.params, self.opt_state, norm = self.apply(self.params, self.opt_state, grads)
      norms.append(norm)
      per_update.append(update_metrics)
    metrics = {k: float(np.mean([m[k] for m in per_update])) for k in per_update[0]}  # mean over updates
    metrics.update(grad_norm=float(np.mean(jax.device_get(norms))), lr=float(optim.current_lr(self.opt_state)),
                   sampler_logp_gap_max=float(gap.max()), updates=float(len(norms)))
    timings["time_update"] = time.perf_counter() - t3
    return metrics

  def _put(self, tree):
    return jax.tree.map(lambda x: jax.device_put(x, mesh_lib.batch_sharding(self.mesh, np.ndim(x))), tree)

  def _logprobs(self, params, b, micro: int, sc: step_lib.StepConfig) -> np.ndarray:
    out = []
    for lo in range(0, b.tokens.shape[0], micro):
      part = self._put((b.tokens[lo:lo + micro], b.noisy_masked[lo:lo + micro], b.valid[lo:lo + micro]))
      out.append(step_lib.logprobs(params, *part, sc=sc))
    return np.asarray(jnp.concatenate(jax.device_get(out)))

  def aup_of(self, result: dict, y_max: float) -> float:
    return aup_lib.aup([(p["tpf"], p["accuracy"]) for p in result["points"]], y_max)
