"""Attention of a decoding call in XLA: its own window of tokens (SPEC §3 rule) and a page walk over its KV prefix.

A decoding call's queries see their own window under `masks.allowed` and every cached position of their row (the
clean blocks before the window: all visible). The window part is a small dense softmax (`window_partial`); the
prefix part (`prefix_partial`) walks the row's pages in fixed chunks of `chunk_pages` with an online softmax, so it
reads only the pages a call gathers (`page_table` columns, a bucket of the longest row, walked only up to that row's
last chunk) and a row's result depends only on its own pages: chunks past its length are exact identities of the
merge. The Triton and Mosaic kernels (`paged_triton`, `paged_mosaic`) are drop-in replacements of `prefix_partial`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks, softmax
from lrl_jax.kernels.softmax import Partial


def _grouped(q: jax.Array, kv_heads: int) -> jax.Array:
  """q [b, t, h, d] → [b, t, kh, g, d] float32, scaled by head_dim**-0.5."""
  b, t, h, d = q.shape
  return (q.astype(jnp.float32) * d ** -0.5).reshape(b, t, kv_heads, h // kv_heads, d)


def merge(state: Partial, scores: jax.Array, allow: jax.Array, v: jax.Array,
          values: str = "btkgs,bskd->btkgd") -> Partial:
  """Fold keys with scores [b, t, kh, g, s] (allowed where `allow` broadcasts True) and values v [b, s, kh, d];
  `values` is the probabilities-times-values einsum of another layout (the page walk's head-major one)."""
  return softmax.fold(state, scores, allow, lambda p: jnp.einsum(values, p, v.astype(jnp.float32)))


def window_partial(q, k, v, q_tok: masks.Tokens, mode: str, block_size: int | None) -> Partial:
  """The call's own keys: q [b, t, h, d], k/v [b, t, kh, d] under the mode rule → Partial."""
  qg = _grouped(q, k.shape[2])
  b, t, kh, g, d = qg.shape
  scores = jnp.einsum("btkgd,bskd->btkgs", qg, k.astype(jnp.float32))
  allow = masks.allowed(q_tok, q_tok, mode, block_size)[:, :, None, None, :]  # [b, t, 1, 1, s]
  return merge(softmax.empty((b, t, kh, g), d), scores, allow, v)


def prefix_partial(state: Partial, q, pool_k, pool_v, page_table, length, layer, chunk_pages: int = 8) -> Partial:
  """Fold in every cached position < length[b] of each row, read from its pages in chunks of `chunk_pages`.

  q [b, t, h, d]; pool_k/pool_v [layers, pages, page, kh, d], read at `layer` (a scalar); page_table [b, n] (n a
  multiple of chunk_pages, or smaller).
  The walk stops after the chunk holding the longest row's last position, so a call costs what its longest row
  holds, not the page-table bucket. Inside, queries and keys are head-major ([b, kh, t*g, d] against [b, kh, s, d]),
  a batched matmul XLA CPU runs ~3x faster alone than the token-major form.
  """
  b, n = page_table.shape
  page, kh, d = pool_k.shape[-3:]
  chunk = min(chunk_pages, n)
  if n % chunk:
    raise ValueError(f"page-table width {n} is not a multiple of the chunk of {chunk} pages")
  _, t, _, g, _ = state.acc.shape
  heads_first = lambda x: jnp.moveaxis(x, 2, 1).reshape(b, kh, t * g, *x.shape[4:])  # [b,t,kh,g,..] → [b,kh,t*g,..]
  token_first = lambda x: jnp.moveaxis(x.reshape(b, kh, t, g, *x.shape[3:]), 1, 2)  # the inverse
  qg = heads_first(_grouped(q, kh))  # [b, kh, t*g, d]

  def keys(pool, pages):  # pages [b, chunk] of `layer` → [b, kh, chunk*page, d] float32
    return jnp.moveaxis(pool[layer, pages].reshape(b, chunk * page, kh, d), 2, 1).astype(jnp.float32)

  def fold(i, state):  # state: acc [b, kh, t*g, d], m/l [b, kh, t*g]
    pages = jax.lax.dynamic_slice_in_dim(page_table, i * chunk, chunk, axis=1)  # [b, chunk]
    slot = i * chunk * page + jnp.arange(chunk * page)
    allow = (slot[None, :] < length[:, None])[:, None, None, :]  # [b, 1, 1, s]
    scores = jnp.einsum("bkqd,bksd->bkqs", qg, keys(pool_k, pages))
    return merge(state, scores, allow, keys(pool_v, pages), "bkqs,bksd->bkqd")

  init = Partial(*map(heads_first, state))
  if n == chunk:  # one chunk: no loop
    out = fold(0, init)
  else:
    steps = jnp.minimum((jnp.max(length) + chunk * page - 1) // (chunk * page), n // chunk)
    out = jax.lax.fori_loop(0, steps, fold, init)
  return Partial(*map(token_first, out))


def finish(state: Partial, dtype) -> jax.Array:
  """acc / l [b, t, kh, g, d] as [b, t, h, d] in dtype; rows that saw no key give zeros."""
  b, t, kh, g, d = state.acc.shape
  return softmax.normalized(state).reshape(b, t, kh * g, d).astype(dtype)
