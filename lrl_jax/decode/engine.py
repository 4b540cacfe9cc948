"""The compiled rollout engine: every forward advances every live slot by one step of its own (SPEC §4).

Each forward gives every active slot a window of `window` tokens starting at its first uncached position. Window
tokens before the slot's current block are committed (their keys/values are written to newly taken pages: the
prompt's complete blocks first, then each finished block); tokens of the current block are denoised (candidates,
strategy, fill). So a slot prefills, denoises and commits at its own pace, and no slot waits for another. With a
window of two blocks, the commit of block k and the first denoising step of block k+1 are one call (`fuse`). The
loop runs on device until `max_forwards`, or until a slot finished while the host has queued work, a slot cannot get
a page (the host preempts), or a slot outgrows the page-table bucket the program was compiled for.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lrl_jax.decode import sampling, strategies
from lrl_jax.decode.config import DecodeConfig
from lrl_jax.decode.slots import ACTIVE, DONE, EngineShape, Pool, Slots, free_pages
from lrl_jax.model import PagedKV, forward, logits, moe_dispatch
from lrl_jax.model.config import ModelConfig

_LOGIT_BYTES = 2**29  # largest float32 [rows, vocab] logits block sampled at once


class Stats(NamedTuple):
  """Counters of one engine call: forwards run, slot-forwards computed and those that did work, exit reasons."""
  forwards: jax.Array
  rows: jax.Array
  busy: jax.Array
  stalled: jax.Array  # a slot could not get a page (the pool is exhausted)
  overflow: jax.Array  # a slot needs more pages than the compiled page-table bucket


class Grant(NamedTuple):
  """Pages taken from the free stack: the pool and slots after it, and which slots got what they asked [S] bool."""
  pool: Pool
  slots: Slots
  granted: jax.Array


class Step(NamedTuple):
  """One forward of every slot: the state after it and [S] busy slots, and whether a slot stalled or overflowed."""
  slots: Slots
  pool: Pool
  busy: jax.Array
  stalled: jax.Array
  overflow: jax.Array


def _rows(x, start, size):
  """Per-row windows x[s, start[s]:start[s]+size] of a [S, n, ...] array."""
  return jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(r, s, size))(x, start)


def _put(x, update, start):
  return jax.vmap(lambda r, u, s: jax.lax.dynamic_update_slice_in_dim(r, u, s, 0))(x, update, start)


def _take_pages(pool: Pool, slots: Slots, need: jax.Array, shape: EngineShape) -> Grant:
  """Grant each slot `need` [S] more pages from the free stack, in slot order while pages last: the first slot whose
  need no longer fits and every later one take none (and keep their pages); each granted slot takes the top `need`
  ids of the stack, appended to its page table."""
  upto = -(-shape.window // shape.page_size) + 1  # a window spans at most this many new pages
  num_free = pool.num_free[0]
  granted = (need == 0) | (jnp.cumsum(need) <= num_free)
  need = jnp.where(granted, need, 0)
  first = num_free - jnp.cumsum(need)  # the slot's pages: free[first .. first+need-1]
  j = jnp.arange(upto)
  take = j[None, :] < need[:, None]  # [S, upto]
  ids = pool.free[jnp.clip(first[:, None] + j[None, :], 0, shape.pages - 1)]
  col = jnp.where(take, slots.num_pages[:, None] + j[None, :], shape.max_pages)  # out of range: dropped
  table = jax.vmap(lambda t, c, v: t.at[c].set(v, mode="drop"))(slots.page_table, col, ids)
  pool = pool._replace(num_free=pool.num_free - need.sum().astype(jnp.int32))
  return Grant(pool, slots._replace(page_table=table, num_pages=slots.num_pages + need), granted)


def _write_kv(pool: Pool, kv, slots: Slots, pos, write, shape: EngineShape) -> Pool:
  """Scatter the window's keys/values kv [layers, S, W, kh, d] at positions pos [S, W] where `write` [S, W]."""
  page = jnp.take_along_axis(slots.page_table, jnp.clip(pos // shape.page_size, 0, shape.max_pages - 1), axis=1)
  flat = page * shape.page_size + pos % shape.page_size
  flat = jnp.where(write, flat, shape.pages * shape.page_size).reshape(-1)  # out of range: dropped
  layers = pool.k.shape[0]

  def put(dst, new):
    rows = dst.reshape(layers, shape.pages * shape.page_size, *dst.shape[3:])
    new = new.reshape(layers, -1, *new.shape[3:]).astype(dst.dtype)
    return rows.at[:, flat].set(new, mode="drop", unique_indices=True).reshape(dst.shape)

  return pool._replace(k=put(pool.k, kv.k), v=put(pool.v, kv.v))


def _candidates(params, cfg: ModelConfig, dcfg: DecodeConfig, hidden, keys):
  """Per position of hidden [S, B, e]: token, probability, log-prob and entropy, sampled from each slot's key.

  Logits are built for a block of slots at a time so at most ~_LOGIT_BYTES of float32 logits exist at once.
  """
  s, b = hidden.shape[:2]
  chunk = max(1, min(s, _LOGIT_BYTES // (4 * b * cfg.vocab_size)))
  while s % chunk:
    chunk -= 1

  def one(args):
    h, k = args
    lg = logits(params, cfg, h).at[..., cfg.mask_token_id].set(-jnp.inf)  # the mask token is never a candidate
    tok, prob, logp, ent = sampling.candidates(lg, k, dcfg, True)
    return tok, prob, logp, ent

  split = lambda a: a.reshape(s // chunk, chunk, *a.shape[1:])
  out = jax.lax.map(one, (split(hidden), split(keys)))
  return tuple(a.reshape(s, *a.shape[2:]) for a in out)


def _forward_step(params, slots: Slots, pool: Pool, threshold: jax.Array, *, cfg: ModelConfig, dcfg: DecodeConfig,
                  shape: EngineShape, bucket: int) -> Step:
  """One model call for all slots."""
  bs, w, ps = dcfg.block_size, shape.window, shape.page_size
  active = slots.status == ACTIVE
  w0 = slots.committed
  pos = w0[:, None] + jnp.arange(w, dtype=jnp.int32)  # [S, W]
  commit = active[:, None] & (pos < slots.cur[:, None])
  commit_end = jnp.where(active, jnp.minimum(slots.cur, w0 + w), w0)
  pages_needed = -(-commit_end // ps)
  overflow = active & (pages_needed > bucket)
  need = jnp.where(active & ~overflow, jnp.maximum(pages_needed - slots.num_pages, 0), 0)
  pool, slots, granted = _take_pages(pool, slots, need, shape)
  go = active & granted & ~overflow
  commit = commit & go[:, None]
  denoise = go[:, None] & (pos >= slots.cur[:, None]) & (pos < slots.cur[:, None] + bs)

  tokens = _rows(slots.tokens, w0, w)
  prefix = PagedKV(pool.k, pool.v, slots.page_table[:, :bucket], w0)
  hidden, kv = forward(params, cfg, tokens, pos, valid=commit | denoise, mode="block", block_size=bs,
                       dtype=jnp.dtype(dcfg.dtype), attn_impl=dcfg.attn_impl, prefix=prefix, return_kv=True,
                       prefix_chunk=shape.prefix_chunk)
  pool = _write_kv(pool, kv, slots, pos, commit, shape)

  # denoise the current block of the slots that reached it
  den = denoise.any(-1)
  start = slots.cur
  blk_pos = start[:, None] + jnp.arange(bs, dtype=jnp.int32)
  blk = _rows(slots.tokens, start, bs)
  masked = (blk == cfg.mask_token_id) & (blk_pos >= slots.prompt_len[:, None])
  h = _rows(hidden, jnp.clip(start - w0, 0, w - bs), bs)
  step_keys = jax.vmap(jax.random.fold_in)(slots.key, slots.nf)
  tok, prob, tok_logp, entropy = _candidates(params, cfg, dcfg, h, step_keys)
  working = den & masked.any(-1)
  n = strategies.schedule(bs, dcfg.num_steps, slots.step)
  fill = strategies.select(dcfg.strategy, masked, prob, entropy, n, dcfg, threshold) & masked & working[:, None]
  blk = jnp.where(fill, tok, blk)
  slots = slots._replace(tokens=_put(slots.tokens, blk, start),
                         step_map=_put(slots.step_map, jnp.where(fill, slots.nf[:, None], _rows(slots.step_map, start, bs)),
                                       start),
                         logp=_put(slots.logp, jnp.where(fill, tok_logp, _rows(slots.logp, start, bs)), start))

  # block finished: stop, or move on to the next block (committed by a later forward)
  finished = den & ~(masked & ~fill).any(-1)
  in_response = (blk_pos >= slots.prompt_len[:, None]) & (blk_pos < slots.end[:, None])
  stop_ids = jnp.asarray(dcfg.stop_ids or (-1,), jnp.int32)
  stops = finished & ((jnp.isin(blk, stop_ids) & in_response).any(-1) | (start + bs >= slots.end))
  advance = finished & ~stops
  decoded_from = (slots.prompt_len // bs) * bs  # blocks from here on were denoised, their commits count
  new_committed = jnp.where(go, commit_end, w0)
  decoded_commits = jnp.maximum(new_committed - jnp.maximum(w0, decoded_from), 0) // bs
  slots = slots._replace(
      committed=new_committed, commits=slots.commits + decoded_commits, nf=slots.nf + working,
      step=jnp.where(advance, 0, slots.step + working), cur=jnp.where(advance, start + bs, start),
      status=jnp.where(stops, DONE, slots.status))
  pool, slots = free_pages(pool, slots, stops)  # a finished sequence needs no cache: its pages return at once
  busy = working | commit.any(-1)
  return Step(slots, pool, busy, (active & ~granted).any(), overflow.any())


def run(params, slots: Slots, pool: Pool, max_forwards: jax.Array, queued: jax.Array, threshold: jax.Array, *,
        cfg: ModelConfig, dcfg: DecodeConfig, shape: EngineShape, bucket: int):
  """One shard's engine call: up to `max_forwards` forwards; stops early when a slot finished and `queued` (the
  host has work to admit), on a stall or a bucket overflow, or when no slot is active. Returns (slots, pool, Stats).
  `threshold` is θ as a runtime scalar (`dcfg.threshold` is not read), so every θ runs the same program.
  `decode/programs.py` compiles it over the mesh."""
  zero = jnp.int32(0)

  def go_on(slots, st):
    """Another forward? With MoE layers the shards of an expert group exchange tokens, so they agree: on while one
    has an active slot, stopped when one needs the host (a shard with no active slot runs no-op forwards)."""
    active = (slots.status == ACTIVE).any()
    host = (queued & (slots.status == DONE).any()) | st.stalled | st.overflow
    if cfg.is_moe:
      active, host = (moe_dispatch.any_in_group(f, cfg.num_experts) for f in (active, host))
    return (st.forwards < max_forwards) & active & ~host

  def body(carry):
    slots, pool, st, _ = carry
    step = _forward_step(params, slots, pool, threshold, cfg=cfg, dcfg=dcfg, shape=shape, bucket=bucket)
    st = Stats(st.forwards + 1, st.rows + step.busy.shape[0], st.busy + step.busy.sum().astype(jnp.int32),
               step.stalled, step.overflow)
    return step.slots, step.pool, st, go_on(step.slots, st)

  st = Stats(zero, zero, zero, jnp.bool_(False), jnp.bool_(False))
  slots, pool, st, _ = jax.lax.while_loop(lambda carry: carry[3], body, (slots, pool, st, go_on(slots, st)))
  return slots, pool, st
