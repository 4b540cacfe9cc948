"""Pallas TPU (Mosaic) flash attention for training: forward and backward kernels, block-sparse over the SPEC §3 mask.

The mask is data-dependent per row (each row's noisy window starts at its own block), so splash attention's static
masks do not apply. Instead XLA classifies every (row, query tile, key tile) pair with `masks.allowed` (empty, partial,
full) and the table goes to the kernels by scalar prefetch: empty pairs are skipped and their key/value (or query)
index map points at a tile that is fetched anyway, so they cost no DMA; partial pairs evaluate the mask from per-token
codes (block id or position, noisy and valid flags); full pairs skip it. float32 running max / sum / accumulator; the
forward saves the log-sum-exp, the backward (dk/dv, then dq) recomputes probabilities from it. The custom VJP and
the per-shard run under a mesh are `pallas_vjp`'s. Compiled on TPUs; tests call `attend(..., interpret=True)` on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from lrl_jax.kernels import masks, pallas_vjp, softmax
from lrl_jax.kernels.pallas_vjp import Static
from lrl_jax.kernels.softmax import NEG

DEFAULT_TILE = 512
_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_NN = (((1,), (0,)), ((), ()))  # a @ b
EMPTY, PARTIAL, FULL = 0, 1, 2


def tile_states(q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None, tq: int, tk: int):
  """[b, t // tq, s // tk] int32: EMPTY / PARTIAL / FULL per tile pair of `masks.allowed`, one query tile at a time."""
  b, t = q_tok.positions.shape
  n_k = k_tok.positions.shape[1] // tk

  def one(i):
    allow = masks.allowed(q_tok.slice(i * tq, tq), k_tok, mode, block_size).reshape(b, tq, n_k, tk)
    return jnp.where(allow.all(axis=(1, 3)), FULL, allow.any(axis=(1, 3)).astype(jnp.int32))

  return jnp.moveaxis(jax.lax.map(one, jnp.arange(t // tq)), 0, 1)


def _with_fetch(state):
  """state [b, n, m] -> state + 4 * the tile (along m) each grid step (i, j) loads: its own if live, else that of the
  next live step in (i, j) order, else of the last one; unchanged indices need no DMA, so empty steps cost none."""
  b, n, m = state.shape
  flat = state.reshape(b, n * m)
  idx = jnp.arange(n * m, dtype=jnp.int32)
  live = flat > EMPTY
  nxt = jax.lax.cummin(jnp.where(live, idx, n * m), axis=1, reverse=True)
  prev = jax.lax.cummax(jnp.where(live, idx, -1), axis=1)
  step = jnp.where(nxt < n * m, nxt, jnp.maximum(prev, 0))
  return (flat + 4 * (step % m)).reshape(b, n, m)


def _codes(tok: masks.Tokens, mode: str, block_size: int | None):
  """[b, 1, len] int32 per-token codes: unit (block id, or position when causal) * 4 + 2 * noisy + valid."""
  unit = tok.positions // block_size if mode == "block" else tok.positions
  return (unit * 4 + 2 * tok.noisy.astype(jnp.int32) + tok.valid.astype(jnp.int32))[:, None, :]


def _allowed(q_code, k_code, mode: str):
  """SPEC §3 mask of query and key codes that broadcast to one 2-D tile ([tq, 1] and [1, tk], or [1, tq] and [tk, 1]):
  `masks.allowed` on 2-D operands (Mosaic lowers no 3-D boolean reshapes); the tests check the two agree."""
  qu, qn = q_code >> 2, (q_code & 2) != 0
  ku, kn, kv = k_code >> 2, (k_code & 2) != 0, (k_code & 1) != 0
  if mode == "causal":
    return kv & ~kn & (ku <= qu)
  return kv & ((qn & ((kn & (ku == qu)) | (~kn & (ku < qu)))) | (~qn & ~kn & (ku <= qu)))


def _col(row):
  """[1, n] -> [n, 1] through an aligned 32-bit transpose (a direct reshape needs sublane gathers, absent on v4)."""
  return jnp.broadcast_to(row, (128, row.shape[1])).T[:, :1]


def _row(col):
  """[n, 1] -> [1, n], likewise."""
  return jnp.broadcast_to(col, (col.shape[0], 128)).T[:1]


def _dot(a, b, dims):
  """float32 product; an explicit precision, since Mosaic rejects a global "highest" default on bfloat16 operands."""
  exact = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else jax.lax.Precision.DEFAULT
  return jax.lax.dot_general(a, b, dims, precision=exact, preferred_element_type=jnp.float32)


def _visit(state, body):
  """body(True) on PARTIAL tiles (mask applied), body(False) on FULL ones; EMPTY tiles run nothing."""
  pl.when(state == PARTIAL)(lambda: body(True))
  pl.when(state == FULL)(lambda: body(False))


def _fwd_kernel(table, q_meta, k_meta, q_ref, k_ref, v_ref, o_ref, lse_ref, q_col, m_sc, l_sc, acc_sc, *, mode,
                scale):
  r, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _():
    q_col[...] = _col(q_meta[...])
    m_sc[...] = jnp.full(m_sc.shape, NEG, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  def body(masked):
    s = _dot(q_ref[...], k_ref[...], _NT) * scale  # [tq, tk]
    if masked:
      allow = _allowed(q_col[...], k_meta[...], mode)
      s = jnp.where(allow, s, NEG)
    m_prev = m_sc[...]  # [tq, 1]
    m_new = jnp.maximum(m_prev, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - m_new)
    if masked:
      p = jnp.where(allow, p, 0.0)
    corr = jnp.exp(m_prev - m_new)
    v = v_ref[...]
    l_sc[...] = corr * l_sc[...] + p.sum(axis=1, keepdims=True)
    acc_sc[...] = corr * acc_sc[...] + _dot(p.astype(v.dtype), v, _NN)
    m_sc[...] = m_new

  _visit(table[r, i, j] & 3, body)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    l = l_sc[...]  # [tq, 1]
    o_ref[...] = (acc_sc[...] / jnp.where(l > 0, l, 1.0)).astype(o_ref.dtype)
    lse_ref[...] = _row(softmax.log_sum_exp(m_sc[...], l))


def _dkdv_kernel(table, q_meta, k_meta, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, k_col, dk_sc,
                 dv_sc, *, mode, scale):
  """Transposed tiles [tk, tq] (keys on sublanes): the query tile's metadata, lse and delta stay rows."""
  r, j, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)

  @pl.when((g == 0) & (i == 0))
  def _():
    k_col[...] = _col(k_meta[...])
    dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

  def body(masked):
    q, do = q_ref[...], do_ref[...]
    p = jnp.exp(_dot(k_ref[...], q, _NT) * scale - lse_ref[...])  # [tk, tq]
    if masked:
      p = jnp.where(_allowed(q_meta[...], k_col[...], mode), p, 0.0)
    dv_sc[...] += _dot(p.astype(do.dtype), do, _NN)
    ds = p * (_dot(v_ref[...], do, _NT) - delta_ref[...]) * scale
    dk_sc[...] += _dot(ds.astype(q.dtype), q, _NN)

  _visit(table[r, j, i] & 3, body)

  @pl.when((g == pl.num_programs(3) - 1) & (i == pl.num_programs(4) - 1))
  def _():
    dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _dq_kernel(table, q_meta, k_meta, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, q_col, lse_col,
               delta_col, dq_sc, *, mode, scale):
  r, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _():
    q_col[...] = _col(q_meta[...])
    lse_col[...] = _col(lse_ref[...])
    delta_col[...] = _col(delta_ref[...])
    dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

  def body(masked):
    k = k_ref[...]
    p = jnp.exp(_dot(q_ref[...], k, _NT) * scale - lse_col[...])  # [tq, tk]
    if masked:
      p = jnp.where(_allowed(q_col[...], k_meta[...], mode), p, 0.0)
    ds = p * (_dot(do_ref[...], v_ref[...], _NT) - delta_col[...]) * scale
    dq_sc[...] += _dot(ds.astype(k.dtype), k, _NN)

  _visit(table[r, i, j] & 3, body)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def _call(kernel, grid, in_specs, out_specs, out_shape, scratch, st: Static, name, args, flops):
  """pallas_call with the tile table (args[0]) prefetched to SMEM; the grid's first three axes are parallel, the
  rest (the accumulation) sequential."""
  head_dim = args[3].shape[-1]
  cost = pl.CostEstimate(flops=flops, transcendentals=flops // (4 * head_dim),
                         bytes_accessed=sum(a.size * a.dtype.itemsize for a in args))
  return pl.pallas_call(
      functools.partial(kernel, mode=st.mode, scale=head_dim ** -0.5),
      grid_spec=pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=1, grid=grid, in_specs=in_specs,
                                             out_specs=out_specs, scratch_shapes=scratch),
      out_shape=out_shape, interpret=st.interpret, name=name, cost_estimate=cost,
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel",) * 3 + ("arbitrary",) * (len(grid) - 3)),
  )(*args)


def _row_specs(tq, tk, d, g):
  """BlockSpecs of grids (row, head, query tile, key tile); key tiles follow the table's fetch index."""
  kt = lambda r, i, j, tb: tb[r, i, j] >> 2
  return {
      "q_meta": pl.BlockSpec((None, 1, tq), lambda r, h, i, j, tb: (r, 0, i)),
      "k_meta": pl.BlockSpec((None, 1, tk), lambda r, h, i, j, tb: (r, 0, kt(r, i, j, tb))),
      "q": pl.BlockSpec((None, None, tq, d), lambda r, h, i, j, tb: (r, h, i, 0)),
      "kv": pl.BlockSpec((None, None, tk, d), lambda r, h, i, j, tb: (r, h // g, kt(r, i, j, tb), 0)),
      "vec": pl.BlockSpec((None, None, 1, tq), lambda r, h, i, j, tb: (r, h, 0, i)),
  }


def _forward(q, k, v, meta, st: Static):
  """q [b, h, t, d], k/v [b, kh, s, d], meta (q codes, k codes, states) -> (o [b, h, t, d], lse [b, h, t])."""
  b, h, t, d = q.shape
  s, g = k.shape[2], h // k.shape[1]
  q_code, k_code, state = meta
  sp = _row_specs(st.tq, st.tk, d, g)
  f32 = jnp.float32
  o, lse = _call(
      _fwd_kernel, (b, h, t // st.tq, s // st.tk),
      [sp["q_meta"], sp["k_meta"], sp["q"], sp["kv"], sp["kv"]], [sp["q"], sp["vec"]],
      [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, 1, t), f32)],
      [pltpu.VMEM((st.tq, 1), jnp.int32), pltpu.VMEM((st.tq, 1), f32), pltpu.VMEM((st.tq, 1), f32),
       pltpu.VMEM((st.tq, d), f32)],
      st, "tpu_flash_fwd", (_with_fetch(state), q_code, k_code, q, k, v), 4 * b * h * t * s * d)
  return o, lse.reshape(b, h, t)


def _backward(q, k, v, meta, o, lse, do, st: Static):
  """(dq, dk, dv) of `_forward`'s output from the saved log-sum-exp: dk/dv by key tile, then dq by query tile."""
  b, h, t, d = q.shape
  kh, s = k.shape[1], k.shape[2]
  g, tq, tk = h // kh, st.tq, st.tk
  q_code, k_code, state = meta
  f32 = jnp.float32
  delta = jnp.einsum("bhtd,bhtd->bht", do.astype(f32), o.astype(f32)).reshape(b, h, 1, t)
  lse = lse.reshape(b, h, 1, t)
  qt = lambda r, j, i, tb: tb[r, j, i] >> 2
  head = lambda kk, gg: kk * g + gg
  q_spec = pl.BlockSpec((None, None, tq, d), lambda r, kk, j, gg, i, tb: (r, head(kk, gg), qt(r, j, i, tb), 0))
  vec_spec = pl.BlockSpec((None, None, 1, tq), lambda r, kk, j, gg, i, tb: (r, head(kk, gg), 0, qt(r, j, i, tb)))
  kv_spec = pl.BlockSpec((None, None, tk, d), lambda r, kk, j, gg, i, tb: (r, kk, j, 0))
  dk, dv = _call(
      _dkdv_kernel, (b, kh, s // tk, g, t // tq),
      [pl.BlockSpec((None, 1, tq), lambda r, kk, j, gg, i, tb: (r, 0, qt(r, j, i, tb))),
       pl.BlockSpec((None, 1, tk), lambda r, kk, j, gg, i, tb: (r, 0, j)),
       q_spec, kv_spec, kv_spec, q_spec, vec_spec, vec_spec],
      [kv_spec, kv_spec], [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      [pltpu.VMEM((tk, 1), jnp.int32), pltpu.VMEM((tk, d), f32), pltpu.VMEM((tk, d), f32)],
      st, "tpu_flash_dkdv", (_with_fetch(state.swapaxes(1, 2)), q_code, k_code, q, k, v, do, lse, delta),
      8 * b * h * t * s * d)
  sp = _row_specs(tq, tk, d, g)
  dq = _call(
      _dq_kernel, (b, h, t // tq, s // tk),
      [sp["q_meta"], sp["k_meta"], sp["q"], sp["kv"], sp["kv"], sp["q"], sp["vec"], sp["vec"]], sp["q"],
      jax.ShapeDtypeStruct(q.shape, q.dtype),
      [pltpu.VMEM((tq, 1), jnp.int32), pltpu.VMEM((tq, 1), f32), pltpu.VMEM((tq, 1), f32), pltpu.VMEM((tq, d), f32)],
      st, "tpu_flash_dq", (_with_fetch(state), q_code, k_code, q, k, v, do, lse, delta), 6 * b * h * t * s * d)
  return dq, dk, dv


def _meta(q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None, tq: int, tk: int):
  """(q codes [b, 1, t], k codes [b, 1, s], tile states [b, t // tq, s // tk]) of padded tokens."""
  return (_codes(q_tok, mode, block_size), _codes(k_tok, mode, block_size),
          tile_states(q_tok, k_tok, mode, block_size, tq, tk))


KERNELS = pallas_vjp.FlashKernels(_meta, _forward, _backward)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None, *, interpret: bool | pltpu.InterpretParams = False, q_tile: int = DEFAULT_TILE,
           k_tile: int = DEFAULT_TILE):
  """`dense_xla.attend` through the Mosaic kernels: q [b, t, h, d], k/v [b, s, kh, d] -> [b, t, h, d].

  Tiles are capped at the length rounded up to 128 (compiled tiles must be multiples of 128; interpret mode takes
  any). q_chunk is not needed (the kernels hold one tile pair at a time).
  """
  del q_chunk
  if mode not in masks.MASK_MODES:
    raise ValueError(f"unknown mask mode {mode!r}; expected one of {masks.MASK_MODES}")
  t, s = q.shape[1], k.shape[1]
  tq, tk = min(q_tile, -(-t // 128) * 128), min(k_tile, -(-s // 128) * 128)
  return pallas_vjp.attend(KERNELS, q, k, v, q_tok, k_tok, mode, block_size, tq, tk, interpret)
