"""The learner (SPEC §7.4): logp_old/ref once, then one pass of accumulated optimizer updates over a step's kept
responses. It owns the policy, its optimizer state and the KL reference, sharded on the training mesh.

Built from typed parts: `Programs` (the optimizer and the compiled update pieces for one mesh), `UpdateConfig` (how
kept responses become rows and updates) and `Hooks` (what the run layer observes: phase boundaries, micro-batches,
the checkpoint to name when an update is not finite). Multi-process: each process builds the rows of its own kept
responses and feeds them into the global update with the whole batch's row count, noisy window and loss totals
(exchanged as `Share`s), and runs as many micro-batches as the process that needs most.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.parallel import multihost
from lrl_jax.rl import batch as batch_lib
from lrl_jax.rl import guards, layout, losses, optim, step as step_lib
from lrl_jax.rl.rollout import Response


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """How a step's kept responses become training rows and optimizer updates (config.train, config.rl, optim)."""
  logp_mode: str  # SPEC §7.1 rows: "block_masked" or "trajectory"
  micro_batch_rows: int  # rows of a micro-batch over all processes
  sequences_per_update: int  # responses per optimizer update; 0: all of the step's in one update
  row_len_bucket: int  # row lengths padded to a multiple of this (0: octave buckets, batch.length_bucket)
  shrink: int  # rl.shrink
  reset_per_step: bool  # the authors' fresh AdamW every RL step (rl/optim.py)
  pad_id: int
  recompute_old_logp: bool  # False: with one update per step, logp_old is the policy's own (no extra pass)


@dataclasses.dataclass(frozen=True)
class Programs:
  """The optimizer and the compiled pieces of an update on `mesh`: the state's shardings, the sharded optimizer
  init, the donating apply, and the static settings of the log-prob and gradient programs (rl/step.py)."""
  mesh: Any
  param_shardings: Any
  opt_shardings: Any
  optimizer: optax.GradientTransformation
  init_opt: Callable  # params -> opt_state, sharded
  apply: Callable  # (params, opt_state, grads) -> (params, opt_state, grad_norm), params and state donated
  step: step_lib.StepConfig

  @classmethod
  def build(cls, param_shapes, mesh, optimizer: optax.GradientTransformation, step: step_lib.StepConfig) -> Programs:
    p_shard = mesh_lib.param_shardings(step.model, param_shapes, mesh)
    o_shard = mesh_lib.opt_state_shardings(optimizer, param_shapes, p_shard, mesh)
    return cls(mesh, p_shard, o_shard, optimizer, jax.jit(optimizer.init, out_shardings=o_shard),
               step_lib.make_apply(optimizer, (p_shard, o_shard)), step)


def _nothing(*_: Any) -> None:
  return None


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What the run layer observes of an update: each phase boundary (logprobs, micro_grads, apply), each
  micro-batch's gradients (fault injection), and the newest saved checkpoint (named when an update is not finite)."""
  phase: Callable[[str], None] = _nothing
  micro_batch: Callable[[], None] = _nothing
  last_good: Callable[[], str] = lambda: "none"


class Share(NamedTuple):
  """What one process tells the others about its rows before an update (exchanged exactly, multihost.allgather)."""
  rows: int  # its row count
  noisy_start: int  # layout.noisy_start of its rows
  totals: list  # batch.totals of its rows in each update
  micro_batches: list  # micro-batches each update needs for its rows


class Update(NamedTuple):
  """An RL step's update: its metrics (means over the optimizer updates) and timings."""
  metrics: dict[str, float]
  timings: dict[str, float]


class Learner:
  """The policy (float32 master params), its optimizer state and the KL reference, and the update that moves them."""

  def __init__(self, programs: Programs, cfg: UpdateConfig, params, hooks: Hooks = Hooks()):
    """`params`: the starting policy (host or device arrays), which is also the KL reference when the loss has one."""
    self.programs, self.cfg, self.hooks = programs, cfg, hooks
    self.params = multihost.put(params, programs.param_shardings)
    self.opt_state = programs.init_opt(self.params)
    # The KL reference: its own buffers in the compute dtype (the forward casts params to it anyway, so its
    # log-probs are unchanged), sharded like the policy: half the f32 bytes per device in a bf16 run.
    compute = jnp.dtype(programs.step.dtype)
    self.ref_params = (jax.tree.map(lambda x: jnp.array(x, dtype=compute, copy=True), self.params)
                       if programs.step.loss.kl_beta else None)

  def state(self) -> dict:
    """What a checkpoint holds: params and optimizer state."""
    return {"params": self.params, "opt_state": self.opt_state}

  def state_target(self) -> dict:
    """The state as abstract arrays with their shardings (a restore target)."""
    shardings = {"params": self.programs.param_shardings, "opt_state": self.programs.opt_shardings}
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self.state(), shardings)

  def load(self, state: dict) -> None:
    """Continue from a restored `state()` (the KL reference stays the starting policy)."""
    self.params, self.opt_state = state["params"], state["opt_state"]

  def update(self, step: int, kept: list[Response], advantages: np.ndarray, correct: np.ndarray) -> Update:
    """Train on the kept responses [k] (global order) of RL step `step` (1-based, for messages).

    This process builds the rows of its own responses; the row length, the split into updates and the loss totals
    are the whole batch's, and every process runs as many micro-batches as the one that needs most.
    """
    c, sc, processes = self.cfg, self.programs.step, multihost.count()
    t2 = time.perf_counter()
    micro = c.micro_batch_rows // processes  # this process's rows of a micro-batch
    mine = [i for i, r in enumerate(kept) if r.record is not None]  # this process's (refill rounds interleave them)
    max_len = batch_lib.length_bucket(max(r.row_length for r in kept), sc.block_size, c.row_len_bucket)
    rows = batch_lib.training_rows([kept[i].record for i in mine], advantages[mine], correct[mine],
                                   mode=c.logp_mode, block_size=sc.block_size, shrink=c.shrink, pad_id=c.pad_id,
                                   row_multiple=micro, len_multiple=c.row_len_bucket, max_len=max_len)
    per = c.sequences_per_update
    num_updates = max(1, -(-len(kept) // per)) if per else 1
    updates = batch_lib.update_groups(rows.batch.row_to_seq, num_updates, len(kept), np.asarray(mine, np.int64))
    shares = multihost.allgather(Share(rows.batch.tokens.shape[0], layout.noisy_start(rows.batch.noisy_masked,
                                                                                      sc.block_size),
                                       [batch_lib.totals(rows, idx) for idx in updates],
                                       [-(-len(idx) // micro) for idx in updates]))
    rows = batch_lib.pad_to(rows, max(s.rows for s in shares), c.pad_id)
    b = rows.batch
    # one update and train.recompute_old_logp off: the updated params are the sampling ones, logp_old needs no pass
    on_policy = not c.recompute_old_logp and len(updates) == 1
    sc = dataclasses.replace(sc, noisy_start=min(s.noisy_start for s in shares), on_policy=on_policy)
    totals = np.sum([s.totals for s in shares], axis=0)  # [updates, 4]
    counts = np.max([s.micro_batches for s in shares], axis=0)  # [updates] micro-batches every process runs
    with mesh_lib.activate(self.programs.mesh):
      logp_old = np.zeros(b.tokens.shape, np.float32) if on_policy else self._logprobs(self.params, b, micro, sc)
      logp_ref = self._logprobs(self.ref_params, b, micro, sc) if self.ref_params is not None else logp_old
    gap = None if on_policy else np.abs(np.where(b.scored, rows.sampler_logp - logp_old, 0.0))
    timings = {"time_logprobs": time.perf_counter() - t2}
    self.hooks.phase("logprobs")

    t3 = time.perf_counter()
    if c.reset_per_step:  # the authors' fresh AdamW every RL step (rl/optim.py)
      self.opt_state = self.programs.init_opt(self.params)
    per_update, norms = [], []
    for idx, total, count in zip(updates, totals, counts):
      batches = lambda: batch_lib.micro_batches(rows, idx, micro, sc.loss, logp_old, logp_ref, total, count)
      grads, aux = self._gradients(batches(), sc, self._router_coefficients(batches(), sc))
      update_metrics = losses.finalize_metrics(multihost.host(aux))
      guards.check_update(step, update_metrics["loss"], float(multihost.host(guards.global_norm(grads))),
                          self.hooks.last_good())
      self.hooks.phase("micro_grads")
      self.params, self.opt_state, norm = self.programs.apply(self.params, self.opt_state, grads)
      del grads, aux
      norms.append(float(multihost.host(norm)))
      per_update.append(update_metrics)
      self.hooks.phase("apply")
    metrics = {k: float(np.mean([m[k] for m in per_update])) for k in per_update[0]}  # mean over updates
    metrics.update(grad_norm=float(np.mean(norms)), lr=float(multihost.host(optim.current_lr(self.opt_state))),
                   updates=float(len(norms)))
    if gap is not None:
      metrics["sampler_logp_gap_max"] = float(max(multihost.allgather(float(gap.max()))))
    timings["time_update"] = time.perf_counter() - t3
    return Update(metrics, timings)

  def _gradients(self, micro_batches, sc: step_lib.StepConfig, coefficients=None):
    """(grads, aux) accumulated over one update's micro-batches (host rows); nothing but the running sums outlives
    a micro-batch on the devices. `coefficients`: the update's load-balancing loss terms (None: off)."""
    grads = aux = None
    mesh = self.programs.mesh
    extra = () if coefficients is None else (coefficients,)
    for mb in micro_batches:
      mb = step_lib.MicroBatch(**multihost.global_rows(mb, mesh))
      with mesh_lib.activate(mesh):
        if grads is None:
          grads, aux = step_lib.micro_grads(self.params, mb, *extra, sc=sc)
        else:
          grads, aux = step_lib.accumulate(self.params, grads, aux, mb, *extra, sc=sc)
      self.hooks.micro_batch()
    return grads, aux

  def _router_coefficients(self, micro_batches, sc: step_lib.StepConfig):
    """With the load-balancing loss on (an MoE model, `router_aux_loss_coef` > 0): one forward over the update's
    micro-batches for its router load, as `losses.router_coefficients` (every process's rows: the loss is the whole
    update's, whatever the split into micro-batches and processes). None when the loss is off."""
    if not (sc.model.is_moe and sc.loss.router_aux_loss_coef):
      return None
    load = tokens = 0.0
    mesh = self.programs.mesh
    for mb in micro_batches:
      part = multihost.global_rows((mb["tokens"], mb["noisy_masked"], mb["valid"]), mesh)
      with mesh_lib.activate(mesh):
        mb_load, mb_tokens = multihost.host(step_lib.router_load(self.params, *part, sc=sc))
      load, tokens = load + np.asarray(mb_load, np.float64), tokens + float(np.sum(mb_tokens))
    return losses.router_coefficients(load, tokens)  # numpy: every process passes the same, replicated

  def _logprobs(self, params, b, micro: int, sc: step_lib.StepConfig) -> np.ndarray:
    """Log-probs [rows, L] of this process's rows, `micro` of them per call (with every process's in it)."""
    out = []
    mesh = self.programs.mesh
    for lo in range(0, b.tokens.shape[0], micro):
      part = multihost.global_rows((b.tokens[lo:lo + micro], b.noisy_masked[lo:lo + micro], b.valid[lo:lo + micro]),
                                   mesh)
      out.append(step_lib.logprobs(params, *part, sc=sc))
    return np.concatenate(multihost.local_rows(out, mesh))
