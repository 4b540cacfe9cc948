"""Pallas (GPU-style) attention of one call's queries against the KV cache, skipping key tiles no query can see.

One program per (batch row, kv head, row tile) holds the G = heads/kv_heads query heads of its kv head for the call's
t queries as [t*G, d] rows (GQA packing: one K/V tile read serves G heads, and the matmul gets G times more rows). It
walks key tiles with an online softmax (float32 max/sum/accumulator) and evaluates `masks.allowed` per tile from
per-token vectors, so no dense mask exists. The loop stops after the row's last tile holding a key any query may see
(`visible_tiles`): decoding early in a long cache reads only the cache prefix. Forward only (no VJP): for decoding.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lrl_jax.model import attention, masks

_NEG = -1e30
_MIN_ROWS = 16  # Triton's smallest dot operand dimension


def visible_tiles(q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
                  key_tile: int) -> jax.Array:
  """[b] int32: key tiles a row must visit, through the last tile holding a valid key at a position some query may
  see (the highest position of the queries' block in block mode, the highest query position in causal mode)."""
  hi = q_tok.positions.max(axis=1)  # [b]
  if mode == "block":
    hi = (hi // block_size + 1) * block_size - 1
  reach = k_tok.valid & (k_tok.positions <= hi[:, None])  # necessary for any query to see the key
  last = jnp.max(jnp.where(reach, jnp.arange(reach.shape[1]), -1), axis=1)
  return ((last + key_tile) // key_tile).astype(jnp.int32)


def _kernel(n_tiles_ref, q_pos_ref, q_noisy_ref, k_pos_ref, k_flag_ref, q_ref, k_ref, v_ref, o_ref, *,
            mode, block_size, key_tile, scale):
  """o = softmax(mask(q k^T * scale)) v for one row tile; q/o refs [rows, d], k/v refs [s, d], flags 1 valid 2 noisy."""
  rows, d = q_ref.shape
  q = q_ref[...]
  q_tok = masks.Tokens(q_pos_ref[...][None], q_noisy_ref[...][None] != 0, jnp.ones((1, rows), bool))

  def body(j, carry):
    acc, m, l = carry  # [rows, d], [rows], [rows]
    tile = pl.ds(j * key_tile, key_tile)
    flag = k_flag_ref[tile][None]  # [1, key_tile]
    k_tok = masks.Tokens(k_pos_ref[tile][None], (flag & 2) != 0, (flag & 1) != 0)
    allow = masks.allowed(q_tok, k_tok, mode, block_size)[0]  # [rows, key_tile]
    s = jnp.where(allow, pltriton.dot(q, k_ref[tile, :], trans_b=True) * scale, _NEG)
    m_new = jnp.maximum(m, s.max(axis=1))
    p = jnp.where(allow, jnp.exp(s - m_new[:, None]), 0.0)
    corr = jnp.exp(m - m_new)
    v = v_ref[tile, :]
    acc = corr[:, None] * acc + pltriton.dot(p.astype(v.dtype), v)
    return acc, m_new, corr * l + p.sum(axis=1)

  init = (jnp.zeros((rows, d), jnp.float32), jnp.full((rows,), _NEG, jnp.float32), jnp.zeros((rows,), jnp.float32))
  acc, _, l = jax.lax.fori_loop(0, n_tiles_ref[()], body, init)
  o_ref[...] = (acc / jnp.where(l > 0, l, 1.0)[:, None]).astype(o_ref.dtype)  # rows seeing no key: zeros


def _pow2(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def _kernel_call(q, k, v, q_tok, k_tok, mode, block_size, *, interpret, key_tile, row_tile):
  """The pallas_call on GQA-packed, tile-padded operands; returns [b, t, h, d]."""
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = h // kh
  rows = max(_MIN_ROWS, pl.next_power_of_2(t * g))
  row_tile = min(row_tile, rows)
  s_pad = pl.cdiv(s, key_tile) * key_tile  # padding copies the cache: allocate caches in key_tile multiples
  pad_s = lambda a: jnp.pad(a, [(0, 0), (0, s_pad - s)] + [(0, 0)] * (a.ndim - 2))
  pad_r = lambda a, value=0: jnp.pad(a, [(0, 0), (0, rows - t * g)] + [(0, 0)] * (a.ndim - 2), constant_values=value)

  qp = q.reshape(b, t, kh, g, d).transpose(0, 2, 1, 3, 4).reshape(b, kh, t * g, d)
  qp = jnp.pad(qp, ((0, 0), (0, 0), (0, rows - t * g), (0, 0)))  # [b, kh, rows, d]
  q_pos = pad_r(jnp.repeat(q_tok.positions, g, axis=1), -1)  # [b, rows]; padding rows see no key
  q_noisy = pad_r(jnp.repeat(q_tok.noisy, g, axis=1).astype(jnp.int32))
  k_flag = pad_s(k_tok.valid.astype(jnp.int32) + 2 * k_tok.noisy.astype(jnp.int32))  # [b, s_pad]
  n_tiles = visible_tiles(q_tok, k_tok, mode, block_size, key_tile)  # [b]

  row_spec = pl.BlockSpec((None, row_tile), lambda i, j, r: (i, r))
  key_spec = pl.BlockSpec((None, s_pad), lambda i, j, r: (i, 0))
  qo_spec = pl.BlockSpec((None, None, row_tile, d), lambda i, j, r: (i, j, r, 0))
  kv_spec = pl.BlockSpec((None, s_pad, None, d), lambda i, j, r: (i, 0, j, 0))
  kernel = functools.partial(_kernel, mode=mode, block_size=block_size, key_tile=key_tile, scale=d ** -0.5)
  out = pl.pallas_call(
      kernel,
      grid=(b, kh, rows // row_tile),
      in_specs=[pl.BlockSpec((None,), lambda i, j, r: (i,)), row_spec, row_spec, key_spec, key_spec,
                qo_spec, kv_spec, kv_spec],
      out_specs=qo_spec,
      out_shape=jax.ShapeDtypeStruct((b, kh, rows, d), q.dtype),
      compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),  # Triton, not Mosaic GPU
      interpret=interpret,
      name="cache_block_attention",
  )(n_tiles, q_pos, q_noisy, pad_s(k_tok.positions), k_flag, qp, pad_s(k), pad_s(v))
  return out[:, :, :t * g].reshape(b, kh, t, g, d).transpose(0, 2, 1, 3, 4).reshape(b, t, h, d)


def pallas_attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
                  q_chunk: int | None = None, *, interpret: bool | None = None, key_tile: int = 64,
                  row_tile: int = 64, max_queries: int = 256):
  """`attention.attend` through the Pallas kernel where it applies, else the XLA path.

  Applies to causal/block modes, power-of-two head_dim/key_tile/row_tile and at most `max_queries` queries (a decode
  or fused commit+denoise call, not the training layout), on GPU or, interpreted, on CPU. Any token metadata is
  exact (the mask is `masks.allowed`); tiles are skipped only by `visible_tiles`. q_chunk is not needed here.
  """
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  applies = (mode in masks.MASK_MODES and (mode == "causal" or bool(block_size)) and q.shape[1] <= max_queries
             and _pow2(q.shape[-1]) and _pow2(key_tile) and _pow2(row_tile)
             and (interpret or jax.default_backend() == "gpu"))
  if not applies:
    return attention.attend(q, k, v, q_tok, k_tok, mode, block_size, q_chunk)
  return _kernel_call(q, k, v, q_tok, k_tok, mode, block_size, interpret=interpret, key_tile=key_tile,
                      row_tile=row_tile)


def _seconds(fn, reps: int = 3) -> float:
  """Mean wall time of fn() after a first (compiling) call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn())
  return (time.perf_counter() - start) / reps


def choose_backend(run_xla, run_pallas) -> str:
  """"pallas" when on GPU its compiled call (a thunk) beats the XLA one; "xla" on CPU/TPU or if Pallas fails."""
  if jax.default_backend() != "gpu":
    return "xla"
  try:
    pallas_s = _seconds(run_pallas)
  except Exception:  # noqa: BLE001 - any lowering/compile failure means: use XLA
    return "xla"
  return "pallas" if pallas_s < _seconds(run_xla) else "xla"


attention.register_backend("pallas", pallas_attend)
