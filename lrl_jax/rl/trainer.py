"""The RL loop (SPEC §7): rollouts → rewards → shaping/filtering → advantages → logp_old/ref → one pass of updates.

State that makes a run resumable — params, optimizer state, step, data cursor — is checkpointed after each
step; every random draw derives from (seed, step), so a resumed run repeats an uninterrupted one exactly.
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

from lrl_jax import sft
from lrl_jax.checkpoints import Checkpoints
from lrl_jax.data.sampler import PromptSampler
from lrl_jax.decode import Decoder
from lrl_jax.evaluation import aup as aup_lib
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.rewards import Judge, JudgeConfig, is_truncated
from lrl_jax.rl import batch as batch_lib
from lrl_jax.rl import layout, losses, optim, refill, setup, shaping, step as step_lib
from lrl_jax.weights import load_checkpoint, write_hf_dir


class Trainer:
  """Owns the model state, data cursor, decoders and judge of one run in `workdir`."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = mesh_lib.make_mesh(**config.mesh)
    cfg, params, tok, stops = setup.model_from_config(config)
    self.model_dir = config.model.checkpoint or None
    if config.warm_start.steps:
      self.model_dir = sft.warm_start(config, workdir, cfg, params, tok, stops, config.train.progress)
      cfg, params, tok = load_checkpoint(self.model_dir, dtype=jnp.float32)
    self.cfg, self.tokenizer, self.stops = cfg, tok, stops
    self.shaping_cfg, self.loss_cfg = setup.algorithm_configs(config)
    d = config.data
    self.train_records = setup.load_dataset(d.train, d.demo_size, d.demo_difficulty, d.shuffle_seed)
    self.train_prompts = setup.prompt_ids(self.train_records, tok)
    self.eval_records = []
    if d.eval:
      self.eval_records = setup.load_dataset(d.eval, d.eval_size, d.demo_difficulty, d.shuffle_seed + 1)[:d.eval_size]
    self.eval_prompts = setup.prompt_ids(self.eval_records, tok)
    self.sampler = PromptSampler(len(self.train_records), d.shuffle_seed)
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
    self.decoder = Decoder(cfg, setup.rollout_decode_config(config, stops), r.batch_size, tok)
    self.step, self.start_eval, self.wall = 0, None, 0.0
    self.checkpoints = Checkpoints(workdir, config.train.keep_last, config.train.keep_every)
    self._restore()

  # ---- checkpoints -------------------------------------------------------------------------------------------
  def _state(self) -> dict:
    return {"params": self.params, "opt_state": self.opt_state}

  def _restore(self) -> None:
    latest = self.checkpoints.latest_step()
    if latest is None:
      return
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self._state(),
                          {"params": self.p_shard, "opt_state": self.o_shard})
    state, meta = self.checkpoints.restore(latest, target)
    self.params, self.opt_state = state["params"], state["opt_state"]
    self.step, self.start_eval, self.wall = meta["step"], meta["start_eval"], meta["wall_seconds"]
    self.sampler.restore(meta["data_cursor"])

  def save(self) -> None:
    meta = {"step": self.step, "data_cursor": self.sampler.state(), "start_eval": self.start_eval,
            "wall_seconds": self.wall, "seed": self.config.seed, "config": self.config.to_dict()}
    self.checkpoints.save(self.step, self._state(), meta)

  def export_hf(self, out_dir: str) -> None:
    """The current policy as an HF model dir (config/tokenizer files from the starting model dir)."""
    write_hf_dir(jax.device_get(self.params), self.cfg, out_dir, src_dir=self.model_dir, overwrite=True)

  def _maybe_kill(self, phase: str) -> None:
    """Fault injection for resume tests: config.debug.kill_at = "PHASE@STEP" SIGKILLs this process there."""
    if self.config.debug.kill_at == f"{phase}@{self.step}":
      os.kill(os.getpid(), signal.SIGKILL)

  # ---- rollouts and rewards ------------------------------------------------------------------------------------
  def compute_params(self, params=None):
    dtype = jnp.dtype(self.decoder.dcfg.dtype)
    return jax.tree.map(lambda x: x.astype(dtype), self.params if params is None else params)

  def score(self, records: list[dict], data: list) -> np.ndarray:
    """Correctness [n] (float; code: pass rate) of responses; truncated responses are wrong (SPEC §7.2)."""
    max_new = self.decoder.dcfg.max_new_tokens
    truncated = [is_truncated(len(r["response_ids"]), max_new) for r in records]
    results = self.judge.score(data, [r["text"] for r in records], truncated)
    return np.asarray([s["pass_rate"] for s in results], np.float64)

  def evaluate(self, params, thresholds) -> dict[str, Any]:
    """Greedy decoding of the eval set at each threshold: accuracy (%), TPF and the AUP of the sweep."""
    points = []
    for th in thresholds:
      dcfg = setup.rollout_decode_config(self.config, self.stops, greedy=True, threshold=th)
      dec = Decoder(self.cfg, dcfg, self.config.eval.batch_size, self.tokenizer)
      records = dec.generate(self.compute_params(params), self.eval_prompts)
      correct = self.score(records, self.eval_records) >= 1.0
      length = sum(len(r["response_ids"]) for r in records)
      forwards = sum(r["num_forwards"] for r in records)
      points.append({"threshold": th, "accuracy": 100.0 * float(np.mean(correct)), "tpf": length / max(forwards, 1)})
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
    records = self.decoder.generate(self.compute_params(), prompts, seed=c.seed * 1_000_003 + self.step,
                                    with_logprobs=True)
    self._maybe_kill("rollout")
    timings["time_rollout"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    correct = self.score(records, data)
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
    records = self.decoder.generate(self.compute_params(), prompts,
                                    seed=refill.rollout_seed(self.config.seed, self.step, round_index),
                                    with_logprobs=True)
    tpf = np.asarray([len(r["response_ids"]) / max(r["num_forwards"], 1) for r in records])
    return refill.Round(np.repeat(np.arange(num), g), records, data, self.score(records, data), tpf)

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
        self._maybe_kill("update")
      self.params, self.opt_state, norm = self.apply(self.params, self.opt_state, grads)
      norms.append(norm)
      per_update.append(losses.finalize_metrics(jax.device_get(aux)))
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
