"""The compiled block-diffusion decode loop (SPEC §4): prefill, then per block denoising forwards and a commit.

Everything runs inside `lax.while_loop`s: an outer loop over blocks (exits when every sequence stopped) and an inner
loop over denoising steps (exits when no active sequence has a masked position left). Each sequence keeps its own
block grid (block k = positions kB..kB+B-1 from its own first prompt token), its own stop flag and its own key.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lrl_jax.decode import sampling, strategies
from lrl_jax.decode.config import DecodeConfig
from lrl_jax.model import forward, logits
from lrl_jax.model.config import ModelConfig
from lrl_jax.model.layers import PagedKV


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
  """Preallocated KV cache: slot s of row b holds position s. k/v: [layers, batch, length, kv_heads, head_dim]."""
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def _as_pages(cache: dict, length: jax.Array, block_size: int) -> PagedKV:
  """The cache as the model's paged prefix: row b's slots are pages b*n .. b*n+n-1 of block_size positions."""
  layers, b, slots = cache["k"].shape[:3]
  n = slots // block_size
  pages = lambda a: a.reshape(layers, b * n, block_size, *a.shape[3:])
  table = jnp.arange(b * n, dtype=jnp.int32).reshape(b, n)
  return PagedKV(pages(cache["k"]), pages(cache["v"]), table, length)


def _write(cache: dict, kv, start: jax.Array) -> dict:
  """Write a call's keys/values [layers, b, t, kh, d] into every row's slots start[b]..start[b]+t-1."""
  row = lambda c, u, p: jax.lax.dynamic_update_slice_in_dim(c, u, p, axis=1)
  write = lambda c, u: jax.vmap(row, in_axes=(1, 1, 0), out_axes=1)(c, u.astype(c.dtype), start)
  return {"k": write(cache["k"], kv.k), "v": write(cache["v"], kv.v)}

def num_slots(prompt_bucket: int, max_new_tokens: int, block_size: int) -> int:
  """KV-cache / token-buffer length: enough whole blocks for the longest prompt plus max_new_tokens."""
  return -(-(prompt_bucket + max_new_tokens) // block_size) * block_size


def _slice_rows(x, start, size):
  return jax.vmap(lambda r, s: jax.lax.dynamic_slice_in_dim(r, s, size))(x, start)


def _put_rows(x, update, start):
  return jax.vmap(lambda r, u, s: jax.lax.dynamic_update_slice_in_dim(r, u, s, 0))(x, update, start)


@functools.partial(jax.jit, static_argnames=("cfg", "dcfg"), donate_argnames=("cache",))
def decode(params, prompt, prompt_len, keys, active, cache, *, cfg: ModelConfig, dcfg: DecodeConfig):
  """Decode a batch. prompt [b, p] right-padded, prompt_len [b], keys [b] (one stream each), active [b].

  Returns (out, cache): out holds tokens/step_map/logp [b, slots] (positions from each row's 0; step_map -1 where
  not generated), the current block [b], denoising forwards `nf` [b] and commit forwards `commits` [b].
  """
  b, p = prompt.shape
  bs, steps, mask_id = dcfg.block_size, dcfg.num_steps, cfg.mask_token_id
  slots = cache["k"].shape[2]
  dtype = jnp.dtype(dcfg.dtype)
  fwd = functools.partial(forward, params, cfg, mode="block", block_size=bs, dtype=dtype, attn_impl=dcfg.attn_impl)
  stop_ids = jnp.asarray(dcfg.stop_ids or (-1,), jnp.int32)

  pos = jnp.arange(slots, dtype=jnp.int32)
  prompt_full = jnp.pad(prompt, ((0, 0), (0, slots - p)))
  tokens = jnp.where(pos < prompt_len[:, None], prompt_full, mask_id).astype(jnp.int32)
  step_map = jnp.full((b, slots), -1, jnp.int32)
  logp = jnp.zeros((b, slots), jnp.float32)
  prefill_end = (prompt_len // bs) * bs
  kv = fwd(prompt, jnp.broadcast_to(pos[:p], (b, p)), valid=pos[:p] < prefill_end[:, None], return_kv=True).kv
  cache = _write(cache, kv, jnp.zeros((b,), jnp.int32))
  end = prompt_len + dcfg.max_new_tokens  # response positions are [prompt_len, end)

  def denoise(cache, state):
    """Inner loop: denoising forwards on each row's current block until no active row has a mask left."""
    blk, masked, blk_pos, run, n_masked, nf, sm, lp, step = state
    h, _ = fwd(blk, blk_pos, prefix=_as_pages(cache, blk_pos[:, 0], bs))  # the cache is read-only until the commit
    lg = logits(params, cfg, h).at[..., mask_id].set(-jnp.inf)  # the mask token is never a candidate
    step_keys = jax.vmap(jax.random.fold_in)(keys, nf)
    tok, prob, tok_logp, entropy = sampling.candidates(lg, step_keys, dcfg, dcfg.strategy == "entropy_bounded")
    working = run & masked.any(-1)
    n = strategies.schedule(n_masked, steps, step)
    fill = strategies.select(dcfg.strategy, masked, prob, entropy, n, dcfg) & masked & working[:, None]
    blk = jnp.where(fill, tok, blk)
    sm = jnp.where(fill, nf[:, None], sm)
    lp = jnp.where(fill, tok_logp, lp)
    return blk, masked & ~fill, blk_pos, run, n_masked, nf + working, sm, lp, step + 1

  def denoise_cond(state):
    masked, run, step = state[1], state[3], state[8]
    return (step < steps) & (run[:, None] & masked).any()

  def block(state):
    tokens, step_map, logp, cache, cur, finished, nf, commits = state
    start = cur * bs
    blk_pos = start[:, None] + jnp.arange(bs, dtype=jnp.int32)
    blk = _slice_rows(tokens, start, bs)
    masked = blk_pos >= prompt_len[:, None]
    run = ~finished
    init = (blk, masked, blk_pos, run, masked.sum(-1), nf, _slice_rows(step_map, start, bs),
            _slice_rows(logp, start, bs), jnp.int32(0))
    blk, _, _, _, _, nf, sm, lp, _ = jax.lax.while_loop(denoise_cond, functools.partial(denoise, cache), init)
    tokens, step_map, logp = _put_rows(tokens, blk, start), _put_rows(step_map, sm, start), _put_rows(logp, lp, start)
    in_response = (blk_pos >= prompt_len[:, None]) & (blk_pos < end[:, None])
    stopped = (jnp.isin(blk, stop_ids) & in_response).any(-1) | (start + bs >= end)
    go_on = run & ~stopped
    commit = lambda c: _write(c, fwd(blk, blk_pos, prefix=_as_pages(c, start, bs), return_kv=True).kv, start)
    cache = jax.lax.cond(go_on.any(), commit, lambda c: c, cache)
    return (tokens, step_map, logp, cache, jnp.where(go_on, cur + 1, cur), finished | stopped, nf,
            commits + go_on)

  zeros = jnp.zeros((b,), jnp.int32)
  init = (tokens, step_map, logp, cache, prompt_len // bs, ~active, zeros, zeros)
  tokens, step_map, logp, cache, cur, _, nf, commits = jax.lax.while_loop(lambda s: ~s[5].all(), block, init)
  out = {"tokens": tokens, "step_map": step_map, "logp": logp, "block": cur, "nf": nf, "commits": commits}
  return out, cache
