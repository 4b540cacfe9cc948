"""The RL loop (SPEC §7): rollouts → rewards → shaping/filtering → advantages → logp_old/ref → one pass of updates.

State that makes a run resumable — params, optimizer state, step, data cursor — is checkpointed after each
step; every random draw derives from (seed, step), so a resumed run repeats an uninterrupted one exactly. A damaged
newest checkpoint is skipped for the one before it; a non-finite loss or gradient norm stops the run before the
update is applied, and non-finite weights are never saved.

Multi-process runs (parallel/multihost.py): each process decodes and judges its contiguous share of the step's prompt
groups on its own devices (response i still samples stream i, so tokens equal a one-process run's), then every
process shapes the whole step from the exchanged rewards, builds the rows of its own kept responses and feeds them
into the global update with the whole batch's totals. The warm start runs on process 0; checkpoints are written
by all processes together (Orbax); model dirs are written by process 0.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from lrl_jax import wiring
from lrl_jax.checkpoints import FINAL_DIR, MODEL_FILES_DIR, Checkpoints, export_hf_dir, write_final_dir
from lrl_jax.data import templates
from lrl_jax.data.sampler import PromptSampler
from lrl_jax.decode import Decoder
from lrl_jax.defaults import ConfigValueError
from lrl_jax.evaluation import aggregate
from lrl_jax.evaluation import aup as aup_lib
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.parallel import multihost
from lrl_jax.rewards import Judge, JudgeConfig, is_truncated
from lrl_jax.rl import batch as batch_lib
from lrl_jax.rl import guards, layout, losses, optim, refill, rollout, shaping, step as step_lib
from lrl_jax.rl.warm_start import WARM_START_DIR, warm_start
from lrl_jax.weights import load_checkpoint


class Trainer:
  """Owns the model state, data cursor, decoders and judge of one run in `workdir`."""

  def __init__(self, config, workdir: str):
    """`config` must have passed `defaults.validate`; data and prompts are checked before the warm start."""
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = mesh_lib.make_mesh(**config.mesh)
    self.rollout_mesh = self._rollout_mesh()
    self.train_records, self.eval_records = wiring.train_records(config), wiring.eval_records(config)
    cfg, params, tok, stops = wiring.model_from_config(config)
    self.train_prompts = templates.prompt_ids(self.train_records, tok)
    self.eval_prompts = templates.prompt_ids(self.eval_records, tok)
    for key, prompts in (("data.train", self.train_prompts), ("data.eval", self.eval_prompts)):
      wiring.check_prompt_lengths(key, prompts, config.rollout.max_new_tokens, cfg)
    self.model_dir = config.model.checkpoint or None
    if config.warm_start.steps:  # once, by process 0; the others wait, then load its result
      if multihost.is_main():
        warm_start(config, workdir, cfg, params, tok, stops, *wiring.warm_start_data(config, tok),
                   progress=config.train.progress)
      multihost.barrier("warm_start")
      self.model_dir = os.path.join(workdir, WARM_START_DIR)
      cfg, params, tok = load_checkpoint(self.model_dir, dtype=jnp.float32)
    self.cfg, self.tokenizer, self.stops = cfg, tok, stops
    self.model_files = os.path.join(workdir, MODEL_FILES_DIR)
    if multihost.is_main() and not os.path.isdir(self.model_files):
      src = wiring.model_files_dir(self.model_dir) if self.model_dir else None
      wiring.write_model_files(self.model_files, cfg, tok, stops, src)
    multihost.barrier("model_files")
    self.shaping_cfg, self.loss_cfg = wiring.algorithm_configs(config)
    self.sampler = PromptSampler(len(self.train_records), config.data.shuffle_seed)
    self.judge = Judge(JudgeConfig(workers=config.reward.workers or None, math_timeout_s=config.reward.math_timeout))

    self.optimizer = optim.make_optimizer(**config.optim)
    shapes = jax.eval_shape(lambda p: p, params)
    self.p_shard = mesh_lib.param_shardings(cfg, shapes, self.mesh)
    self.o_shard = mesh_lib.opt_state_shardings(self.optimizer, shapes, self.p_shard, self.mesh)
    self.params = multihost.put(params, self.p_shard)
    self.init_opt = jax.jit(self.optimizer.init, out_shardings=self.o_shard)
    self.opt_state = self.init_opt(self.params)
    # The KL reference: its own buffers in the compute dtype (the forward casts params to it anyway, so its
    # log-probs are unchanged), sharded like the policy: half the f32 bytes per device in a bf16 run.
    compute = jnp.dtype(config.model.dtype)
    self.ref_params = (jax.tree.map(lambda x: jnp.array(x, dtype=compute, copy=True), self.params)
                       if self.loss_cfg.kl_beta else None)
    self.apply = step_lib.make_apply(self.optimizer, (self.p_shard, self.o_shard))
    r = config.rollout
    self.sc = step_lib.StepConfig(cfg, self.loss_cfg, config.rl.train_block_size or r.block_size, config.model.dtype,
                                  config.model.remat, config.model.q_chunk)
    self.max_prompt_len = r.max_prompt_len or max(len(p) for p in self.train_prompts + self.eval_prompts)
    self.decoder = self._decoder(wiring.rollout_decode_config(config, stops), r.batch_size)
    self.to_rollout = mesh_lib.to_rollout(cfg, shapes, self.mesh, jnp.dtype(self.decoder.dcfg.dtype))
    self._eval_decoder: Decoder | None = None  # one greedy engine for every eval threshold (θ is a call argument)
    self.step, self.start_eval, self.wall = 0, None, 0.0
    # Called with the phase's name at each boundary (reshard, rollout, logprobs, micro_grads, apply, eval/reshard,
    # eval, save, export): tests read the live device bytes there against `plan`'s timeline (plan/timeline.py).
    self.on_phase: Callable[[str], None] | None = None
    self.checkpoints = Checkpoints(workdir, config.train.keep_last, config.train.keep_every)
    try:
      self._restore()
    except BaseException as e:
      multihost.exit_now(e, cleanup=[self.judge.close])
      self.close()
      raise

  def _rollout_mesh(self):
    """The mesh the engine decodes on: the training mesh, or in a multi-process run this process's part of it."""
    if multihost.count() == 1:
      return self.mesh
    c, processes = self.config, multihost.count()
    local = self.mesh.local_mesh
    if local.shape["tensor"] != self.mesh.shape["tensor"]:
      raise ConfigValueError(f"config.mesh.tensor: {self.mesh.shape['tensor']} spans processes; a tensor-parallel "
                             f"group must lie within one process's {jax.local_device_count()} devices")
    shards = mesh_lib.AXES[:2]
    total = int(np.prod([self.mesh.shape[a] for a in shards]))
    for key, value in (("rollout.batch_size", c.rollout.batch_size), ("eval.batch_size", c.eval.batch_size),
                       ("train.micro_batch_rows", c.train.micro_batch_rows)):
      if value % total or value % processes:
        raise ConfigValueError(f"config.{key}: {value} must be a multiple of the {total} data shards over all "
                               f"{processes} processes (mesh data x fsdp)")
    return local

  def _phase(self, name: str) -> None:
    if self.on_phase is not None:
      self.on_phase(name)

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
    if not bool(multihost.host(guards.all_finite(self._state()))):
      raise guards.NonFiniteError(f"step {self.step}: non-finite weights or optimizer state; not saved; last good "
                                  f"checkpoint: {self.last_good()}")
    meta = {"step": self.step, "data_cursor": self.sampler.state(), "start_eval": self.start_eval,
            "wall_seconds": self.wall, "seed": self.config.seed, "config": self.config.to_dict()}
    self.checkpoints.save(self.step, self._state(), meta, during=lambda: self.maybe_kill("save"))
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
    self.judge.close()

  # ---- rollouts and rewards ------------------------------------------------------------------------------------
  def _decoder(self, dcfg, slots: int) -> Decoder:
    """An engine with the run's rollout settings; slots and KV pages are split over the rollout mesh's data axes
    (in a multi-process run this process's share of the `slots`)."""
    r = self.config.rollout
    return Decoder(self.cfg, dcfg, slots // multihost.count(), self.tokenizer, max_prompt_len=self.max_prompt_len,
                   pool_tokens=r.pool_tokens // multihost.count() or None, page_size=r.page_size or None,
                   fuse=r.fuse_commit, forwards_per_call=r.forwards_per_call, mesh=self.rollout_mesh)

  def compute_params(self, params=None):
    """The policy in the rollout layout (compute dtype, replicated over the data axes, split over tensor), as arrays
    on the rollout mesh."""
    return multihost.local_view(self.to_rollout(self.params if params is None else params), self.mesh)

  def _rollout(self, prompts, data, seed: int, timings: dict) -> tuple[list[rollout.Response], np.ndarray]:
    """Reshard the policy, decode and judge (overlapped) this process's share of the groups, then exchange the
    results: (responses [n], correctness [n]) of all `prompts` on every process; fills timing metrics."""
    g = self.config.rollout.num_responses
    groups = multihost.share(len(prompts) // g)
    mine = slice(groups.start * g, groups.stop * g)
    t = time.perf_counter()
    params = jax.block_until_ready(self.compute_params())
    timings["time_reshard"] = timings.get("time_reshard", 0.0) + time.perf_counter() - t
    self._phase("reshard")
    bar = tqdm(total=mine.stop - mine.start, desc="rollout", unit="seq", leave=False,
               disable=not (self.config.train.progress and multihost.is_main()))

    def progress(info):
      bar.n = info["finished"]
      bar.set_postfix(live=info["live"], queued=info["queued"], tok_s=f"{info['tokens'] / max(info['seconds'], 1e-9):.0f}")

    try:
      out = rollout.decode_and_judge(self.decoder, params, prompts[mine], data[mine], self.judge, seed, progress,
                                     stream_ids=range(mine.start, mine.stop))
    finally:
      bar.close()
    del params  # the rollout layout lives for the rollout only (the engine already freed its slots and pool)
    self._phase("rollout")
    for k, v in out.timings.items():
      timings[k] = timings.get(k, 0.0) + v
    if multihost.count() > 1:
      print(f"process {multihost.index()}/{multihost.count()}: step {self.step + 1}: decoded groups "
            f"[{groups.start}, {groups.stop}) of {len(prompts) // g}: {len(out.records)} responses", file=sys.stderr,
            flush=True)
    return rollout.gather(out, multihost.allgather, multihost.index())

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
    mine = multihost.share(len(self.eval_prompts))
    if self._eval_decoder is None:
      dcfg = wiring.rollout_decode_config(self.config, self.stops, greedy=True, threshold=thresholds[0])
      self._eval_decoder = self._decoder(dcfg, self.config.eval.batch_size)
    rollout_params = self.compute_params(params)  # once for every threshold; freed when the sweep ends
    self._phase("eval/reshard")
    for th in thresholds:
      records = self._eval_decoder.generate(rollout_params, self.eval_prompts[mine],
                                            stream_ids=range(mine.start, mine.stop), threshold=th)
      correct = self.score(records, self.eval_records[mine]) >= 1.0
      rows = [{"correct": bool(ok), "response_length": len(r["response_ids"]), "num_forwards": r["num_forwards"],
               "forwards_total": r["forwards_total"], "truncated": r["truncated"]} for r, ok in zip(records, correct)]
      summary = aggregate.summarize([row for part in multihost.allgather(rows) for row in part])
      points.append({"threshold": th, **summary})
    del rollout_params
    self._phase("eval")
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
    responses, correct = self._rollout(prompts, data, c.seed * 1_000_003 + self.step, timings)
    self.maybe_kill("rollout")
    timings["time_rollout"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    tpf = _tpf(responses)
    if c.rl.resample_filtered:  # accept-reject refill of filtered groups (rl/refill.py); time_reward includes it
      t = time.perf_counter()
      (group, responses, data, correct, tpf), rounds = refill.refill(
          refill.Round(group, responses, data, correct, tpf), self._refill_round, self.shaping_cfg, n)
      timings.update(time_refill=time.perf_counter() - t, refill_rounds=float(rounds))
    shaped = shaping.shape(group, correct, tpf, self.shaping_cfg, rollout.graded(data))  # math: +-1 unnormalised
    metrics = shaping.metrics(shaped, correct, tpf)
    metrics["tpf_dataset"] = sum(r.length for r in responses) / max(1, sum(r.forwards for r in responses))
    metrics["truncated_frac"] = float(np.mean([r.truncated for r in responses]))
    timings["time_reward"] = time.perf_counter() - t1
    kept = np.flatnonzero(shaped.keep)
    if len(kept):
      metrics.update(self._update([responses[k] for k in kept], shaped.advantages[kept], correct[kept] >= 1.0,
                                  timings))
    self.step += 1
    return {**metrics, **timings, "kept_responses": float(len(kept))}

  def _refill_round(self, round_index: int, num: int) -> refill.Round:
    """`num` more prompts, G responses each from the round's own random stream, judged (rl.resample_filtered)."""
    g = self.config.rollout.num_responses
    idx = self.sampler.next(num)
    prompts = [self.train_prompts[i] for i in idx for _ in range(g)]
    data = [self.train_records[i] for i in idx for _ in range(g)]
    responses, correct = self._rollout(prompts, data,
                                       refill.rollout_seed(self.config.seed, self.step, round_index), {})
    return refill.Round(np.repeat(np.arange(num), g), responses, data, correct, _tpf(responses))

  def _update(self, kept: list[rollout.Response], advantages, correct, timings) -> dict[str, float]:
    """logp_old/ref once, then one pass of accumulated optimizer updates over the kept responses [k] (global order).

    This process builds the rows of its own responses; the row length, the split into updates and the loss totals
    are the whole batch's, and every process runs as many micro-batches as the one that needs most.
    """
    c, processes = self.config, multihost.count()
    t2 = time.perf_counter()
    micro = c.train.micro_batch_rows // processes  # this process's rows of a micro-batch
    pad_id = self.tokenizer.pad_token_id or 0
    mine = [i for i, r in enumerate(kept) if r.record is not None]  # contiguous: this process's share
    max_len = batch_lib.length_bucket(max(r.row_length for r in kept), self.sc.block_size, c.train.row_len_bucket)
    rows = batch_lib.training_rows([kept[i].record for i in mine], advantages[mine], correct[mine],
                                   mode=self.shaping_cfg.logp_mode, block_size=self.sc.block_size, shrink=c.rl.shrink,
                                   pad_id=pad_id, row_multiple=micro, len_multiple=c.train.row_len_bucket,
                                   max_len=max_len)
    per = c.train.sequences_per_update
    num_updates = max(1, -(-len(kept) // per)) if per else 1
    updates = batch_lib.update_groups(rows.batch.row_to_seq, num_updates, len(kept), mine[0] if mine else 0)
    shared = multihost.allgather((rows.batch.tokens.shape[0], layout.noisy_start(rows.batch.noisy_masked,
                                                                                 self.sc.block_size),
                                  [batch_lib.totals(rows, idx) for idx in updates],
                                  [-(-len(idx) // micro) for idx in updates]))
    rows = batch_lib.pad_to(rows, max(s[0] for s in shared), pad_id)
    b = rows.batch
    # one update and train.recompute_old_logp off: the updated params are the sampling ones, logp_old needs no pass
    on_policy = not c.train.recompute_old_logp and len(updates) == 1
    sc = dataclasses.replace(self.sc, noisy_start=min(s[1] for s in shared), on_policy=on_policy)
    totals = np.sum([s[2] for s in shared], axis=0)  # [updates, 4]
    counts = np.max([s[3] for s in shared], axis=0)  # [updates] micro-batches every process runs
    with mesh_lib.activate(self.mesh):
      logp_old = np.zeros(b.tokens.shape, np.float32) if on_policy else self._logprobs(self.params, b, micro, sc)
      logp_ref = self._logprobs(self.ref_params, b, micro, sc) if self.ref_params is not None else logp_old
    gap = None if on_policy else np.abs(np.where(b.scored, rows.sampler_logp - logp_old, 0.0))
    timings["time_logprobs"] = time.perf_counter() - t2
    self._phase("logprobs")

    t3 = time.perf_counter()
    if self.config.optim.reset_per_step:  # the authors' fresh AdamW every RL step (rl/optim.py)
      self.opt_state = self.init_opt(self.params)
    per_update, norms = [], []
    for idx, total, count in zip(updates, totals, counts):
      grads, aux = self._gradients(batch_lib.micro_batches(rows, idx, micro, self.loss_cfg, logp_old, logp_ref, total,
                                                           count), sc)
      update_metrics = losses.finalize_metrics(multihost.host(aux))
      guards.check_update(self.step + 1, update_metrics["loss"], float(multihost.host(guards.global_norm(grads))),
                          self.last_good())
      self._phase("micro_grads")
      self.params, self.opt_state, norm = self.apply(self.params, self.opt_state, grads)
      del grads, aux
      norms.append(float(multihost.host(norm)))
      per_update.append(update_metrics)
      self._phase("apply")
    metrics = {k: float(np.mean([m[k] for m in per_update])) for k in per_update[0]}  # mean over updates
    metrics.update(grad_norm=float(np.mean(norms)), lr=float(multihost.host(optim.current_lr(self.opt_state))),
                   updates=float(len(norms)))
    if gap is not None:
      metrics["sampler_logp_gap_max"] = float(max(multihost.allgather(float(gap.max()))))
    timings["time_update"] = time.perf_counter() - t3
    return metrics

  def _gradients(self, micro_batches, sc: step_lib.StepConfig):
    """(grads, aux) accumulated over one update's micro-batches (host rows); nothing but the running sums outlives
    a micro-batch on the devices."""
    grads = aux = None
    for mb in micro_batches:
      mb = step_lib.MicroBatch(**multihost.global_rows(mb, self.mesh))
      with mesh_lib.activate(self.mesh):
        if grads is None:
          grads, aux = step_lib.micro_grads(self.params, mb, sc=sc)
        else:
          grads, aux = step_lib.accumulate(self.params, grads, aux, mb, sc=sc)
      self.maybe_kill("update")
    return grads, aux

  def _logprobs(self, params, b, micro: int, sc: step_lib.StepConfig) -> np.ndarray:
    """Log-probs [rows, L] of this process's rows, `micro` of them per call (with every process's in it)."""
    out = []
    for lo in range(0, b.tokens.shape[0], micro):
      part = multihost.global_rows((b.tokens[lo:lo + micro], b.noisy_masked[lo:lo + micro], b.valid[lo:lo + micro]),
                                   self.mesh)
      out.append(step_lib.logprobs(params, *part, sc=sc))
    return np.concatenate(multihost.local_rows(out, self.mesh))

  def aup_of(self, result: dict, y_max: float) -> float:
    return aup_lib.aup([(p["tpf"], p["accuracy"]) for p in result["points"]], y_max)


def _tpf(responses: list[rollout.Response]) -> np.ndarray:
  """Tokens per forward [n] of each response."""
  return np.asarray([r.length / max(r.forwards, 1) for r in responses])
