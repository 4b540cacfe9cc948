"""The rollout bench's baseline: a dense static batched decode loop, written apart from the engine (as the
pre-engine decoder worked): a fixed batch, a dense KV cache per row, the batch runs until every row stopped.

Each batch is one compiled call: a prefill forward writes every row's complete prompt blocks into its cache, then
per block denoising forwards (all rows, until no running row has a mask) and one commit forward (rows that go on).
Sequences draw from the same per-request streams as the engine (key = fold_in(key(seed), request index), step t of
a sequence from fold_in(key, t)), so records equal the engine's. A row's cache is contiguous ([layers, b, n, ...]);
forwards read it in runs of `CHUNK` positions up to the batch's longest row (the page walk over a row's own
consecutive runs), a stronger baseline than the old engine, which attended over all n positions every forward.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.decode import records as records_lib, sampling, strategies
from lrl_jax.decode.config import DecodeConfig
from lrl_jax.model import PagedKV, forward, logits
from lrl_jax.model.config import ModelConfig

CHUNK = 32  # cache positions per step of the read (the engine's default walk: 8 pages of a 4-token block)


class BatchOut(NamedTuple):
  """One decoded batch: token buffers [b, n], counters [b], and the loop's forward counts (scalars)."""
  tokens: jax.Array
  step_map: jax.Array
  logp: jax.Array
  cur: jax.Array  # first position of each row's last block
  nf: jax.Array  # denoising forwards of each row
  commits: jax.Array  # commit forwards of each row's decoded blocks
  forwards: jax.Array  # batched forwards run (prefill, denoising, commits)
  busy: jax.Array  # row-forwards that did work (denoised a masked block or committed)
  tail: jax.Array  # forwards in which fewer than half of the rows did work


class Stats(NamedTuple):
  """Totals of `decode`: wall seconds, batched forwards, row-forwards computed and busy, tail forwards."""
  seconds: float
  forwards: int
  rows: int
  busy: int
  tail: int


def _rows(x, start, size):
  return jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(r, s, size))(x, start)


def _put(x, update, start):
  return jax.vmap(lambda r, u, s: jax.lax.dynamic_update_slice_in_dim(r, u, s, 0))(x, update, start)


@functools.partial(jax.jit, static_argnames=("cfg", "dcfg", "prompt_cols"))
def decode_batch(params, tokens, prompt_len, end, keys, active, *, cfg: ModelConfig, dcfg: DecodeConfig,
                 prompt_cols: int) -> BatchOut:
  """Decode a batch: tokens [b, n] (prompt then mask ids, n a multiple of the block), prompt_len/end [b] (response
  positions [prompt_len, end)), keys [b], active [b] (padding rows never run)."""
  b, n = tokens.shape
  bs, mask_id, dtype = dcfg.block_size, cfg.mask_token_id, jnp.dtype(dcfg.dtype)
  runs = -(-n // CHUNK)
  cache_shape = (cfg.num_layers, b, runs * CHUNK, cfg.num_kv_heads, cfg.head_dim)
  table = jnp.arange(b * runs, dtype=jnp.int32).reshape(b, runs)  # row r's positions: runs r*runs.. in order
  fwd = functools.partial(forward, params, cfg, mode="block", block_size=bs, dtype=dtype, attn_impl="xla",
                          prefix_chunk=1)
  stop_ids = jnp.asarray(dcfg.stop_ids or (-1,), jnp.int32)

  def write(cache, kv, start, valid):  # kv [layers, b, t, kh, d] at positions start[b]..; only `valid` [b, t]
    t = kv.shape[2]
    old = jax.vmap(lambda c, s: jax.lax.dynamic_slice_in_dim(c, s, t, 1), in_axes=(1, 0), out_axes=1)(cache, start)
    new = jnp.where(valid[None, :, :, None, None], kv.astype(cache.dtype), old)
    return jax.vmap(lambda c, u, s: jax.lax.dynamic_update_slice_in_dim(c, u, s, 1), in_axes=(1, 1, 0),
                    out_axes=1)(cache, new, start)

  # prefill: every row's complete prompt blocks, attending among themselves block-causally
  prefill_end = jnp.where(active, (prompt_len // bs) * bs, 0)
  pos = jnp.broadcast_to(jnp.arange(prompt_cols, dtype=jnp.int32), (b, prompt_cols))
  _, kv = fwd(tokens[:, :prompt_cols], pos, valid=pos < prefill_end[:, None], return_kv=True)
  zero = jnp.zeros((b,), jnp.int32)
  valid = pos < prefill_end[:, None]
  ck = write(jnp.zeros(cache_shape, dtype), kv.k, zero, valid)
  cv = write(jnp.zeros(cache_shape, dtype), kv.v, zero, valid)
  first = (prompt_len // bs) * bs

  def call(ck, cv, blk, blk_pos, cur, return_kv):
    as_runs = lambda c: c.reshape(c.shape[0], b * runs, CHUNK, *c.shape[3:])  # the same buffer, in runs
    return fwd(blk, blk_pos, prefix=PagedKV(as_runs(ck), as_runs(cv), table, cur), return_kv=return_kv)

  def denoise(state):
    tok, sm, lp, ck, cv, cur, run, masked, step, nf, fw, busy, tail = state
    blk, blk_pos = _rows(tok, cur, bs), cur[:, None] + jnp.arange(bs, dtype=jnp.int32)
    hidden, _ = call(ck, cv, blk, blk_pos, cur, False)
    lg = logits(params, cfg, hidden).at[..., mask_id].set(-jnp.inf)
    cand, prob, cand_logp, entropy = sampling.candidates(lg, jax.vmap(jax.random.fold_in)(keys, nf), dcfg, True)
    working = run & masked.any(-1)
    fill = strategies.select(dcfg.strategy, masked, prob, entropy, strategies.schedule(bs, dcfg.num_steps, step),
                             dcfg) & masked & working[:, None]
    tok = _put(tok, jnp.where(fill, cand, blk), cur)
    sm = _put(sm, jnp.where(fill, nf[:, None], _rows(sm, cur, bs)), cur)
    lp = _put(lp, jnp.where(fill, cand_logp, _rows(lp, cur, bs)), cur)
    few = 2 * working.sum() < b
    return (tok, sm, lp, ck, cv, cur, run, masked & ~fill, step + working, nf + working, fw + 1,
            busy + working.sum(), tail + few)

  def block(state):
    tok, sm, lp, ck, cv, cur, done, nf, commits, fw, busy, tail = state
    blk_pos = cur[:, None] + jnp.arange(bs, dtype=jnp.int32)
    run = ~done
    masked = run[:, None] & (blk_pos >= prompt_len[:, None]) & (_rows(tok, cur, bs) == mask_id)
    init = (tok, sm, lp, ck, cv, cur, run, masked, zero, nf, fw, busy, tail)
    tok, sm, lp, ck, cv, cur, run, _, _, nf, fw, busy, tail = jax.lax.while_loop(
        lambda s: (s[6][:, None] & s[7]).any(), denoise, init)
    blk = _rows(tok, cur, bs)
    in_response = (blk_pos >= prompt_len[:, None]) & (blk_pos < end[:, None])
    stopped = (jnp.isin(blk, stop_ids) & in_response).any(-1) | (cur + bs >= end)
    go_on = run & ~stopped

    def commit(c):
      ck, cv, fw, busy, tail = c
      _, kv = call(ck, cv, blk, blk_pos, cur, True)
      keep = jnp.broadcast_to(go_on[:, None], (b, bs))
      return (write(ck, kv.k, cur, keep), write(cv, kv.v, cur, keep), fw + 1, busy + go_on.sum(),
              tail + (2 * go_on.sum() < b))

    ck, cv, fw, busy, tail = jax.lax.cond(go_on.any(), commit, lambda c: c, (ck, cv, fw, busy, tail))
    return (tok, sm, lp, ck, cv, jnp.where(go_on, cur + bs, cur), done | stopped, nf, commits + go_on, fw, busy,
            tail)

  one = jnp.int32(1)
  init = (tokens, jnp.full((b, n), -1, jnp.int32), jnp.zeros((b, n), jnp.float32), ck, cv, first, ~active, zero,
          zero, one, active.sum().astype(jnp.int32), jnp.int32(0))
  tok, sm, lp, _, _, cur, _, nf, commits, fw, busy, tail = jax.lax.while_loop(lambda s: ~s[6].all(), block, init)
  return BatchOut(tok, sm, lp, cur, nf, commits, fw, busy, tail)


def decode(params, cfg: ModelConfig, dcfg: DecodeConfig, prompts: Sequence[Sequence[int]], batch: int,
           seed: int = 0, prompt_cols: int | None = None) -> tuple[records_lib.DecodedBatch, Stats]:
  """Records of `prompts` (each with dcfg.max_new_tokens, in prompt order), decoded `batch` at a time, and the
  totals."""
  bs = dcfg.block_size
  prompt_cols = prompt_cols or max(len(p) for p in prompts)
  n = -(-(prompt_cols + dcfg.max_new_tokens) // bs) * bs
  base = jax.random.key(seed)
  records, totals = [], np.zeros(4, np.int64)
  start = time.perf_counter()
  for lo in range(0, len(prompts), batch):
    part = list(prompts[lo:lo + batch])
    tokens = np.full((batch, n), cfg.mask_token_id, np.int32)
    plen = np.ones(batch, np.int32)
    for i, p in enumerate(part):
      tokens[i, :len(p)], plen[i] = p, len(p)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(lo, lo + batch, dtype=jnp.uint32))
    out = jax.device_get(decode_batch(params, jnp.asarray(tokens), jnp.asarray(plen),
                                      jnp.asarray(plen + dcfg.max_new_tokens), keys,
                                      jnp.asarray(np.arange(batch) < len(part)), cfg=cfg, dcfg=dcfg,
                                      prompt_cols=prompt_cols))
    totals += [out.forwards, out.forwards * batch, out.busy, out.tail]
    for i, p in enumerate(part):
      records.append(records_lib.from_row(p, out, i, dcfg.max_new_tokens, dcfg.block_size, dcfg.stop_ids))
  return records_lib.DecodedBatch.stack(records), Stats(time.perf_counter() - start, *(int(x) for x in totals))
