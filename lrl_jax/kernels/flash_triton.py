"""Pallas (Triton) flash attention for training on GPUs: forward and backward kernels, mask per tile from metadata.

Each program owns one (row, head, query tile) (forward, dq) or one (row, kv head, key tile) (dk/dv, looping over the
G query heads sharing it). Masks are `masks.allowed` of the tiles' per-token vectors (positions, noisy/valid flags),
never a dense matrix, and a tile pair the mask leaves empty is skipped (`lax.cond`). float32 running max / sum /
accumulator (`softmax.fold`); the forward saves the log-sum-exp, the backward recomputes probabilities from it. The
custom VJP and the per-shard run under a mesh are `pallas_vjp`'s. Compiled on GPUs; tests call
`attend(..., interpret=True)` on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lrl_jax.kernels import masks, pallas_vjp, softmax

_PARAMS = pltriton.CompilerParams(num_warps=4, num_stages=2)


def _tok(pos_ref, flag_ref, tile):
  """Tokens [1, n] of one tile from int32 positions and flags (1 valid, 2 noisy)."""
  flag = flag_ref[tile][None]
  return masks.Tokens(pos_ref[tile][None], (flag & 2) != 0, (flag & 1) != 0)


def _fwd_kernel(q_pos, q_flag, k_pos, k_flag, q_ref, k_ref, v_ref, o_ref, lse_ref, *, mode, block_size, tk, scale):
  tq, d = q_ref.shape
  q = q_ref[...]
  q_tok = masks.Tokens(q_pos[...][None], (q_flag[...][None] & 2) != 0, jnp.ones((1, tq), bool))

  def body(j, carry):
    tile = pl.ds(j * tk, tk)
    allow = masks.allowed(q_tok, _tok(k_pos, k_flag, tile), mode, block_size)[0]  # [tq, tk]

    def visit(state: softmax.Partial):
      v = v_ref[tile, :]
      s = pltriton.dot(q, k_ref[tile, :], trans_b=True) * scale
      return softmax.fold(state, s, allow, lambda p: pltriton.dot(p.astype(v.dtype), v))

    return jax.lax.cond(jnp.max(allow.astype(jnp.int32)) > 0, visit, lambda c: c, carry)

  state = jax.lax.fori_loop(0, k_ref.shape[0] // tk, body, softmax.empty((tq,), d))
  o_ref[...] = softmax.normalized(state).astype(o_ref.dtype)
  lse_ref[...] = softmax.log_sum_exp(state.m, state.l)


def _probs(q, k, allow, lse, scale):
  """Recomputed probabilities [tq, tk] float32 of a tile pair."""
  return jnp.where(allow, jnp.exp(pltriton.dot(q, k, trans_b=True) * scale - lse[:, None]), 0.0)


def _dkdv_kernel(q_pos, q_flag, k_pos, k_flag, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                 mode, block_size, tq, scale):
  tk, d = k_ref.shape
  groups, t = q_ref.shape[0], q_ref.shape[1]
  n_q = t // tq
  k, v = k_ref[...], v_ref[...]
  k_tok = masks.Tokens(k_pos[...][None], (k_flag[...][None] & 2) != 0, (k_flag[...][None] & 1) != 0)

  def body(idx, carry):
    g, i = jax.lax.div(idx, n_q), jax.lax.rem(idx, n_q)  # lax ops: Triton lowers them directly
    tile = pl.ds(i * tq, tq)
    allow = masks.allowed(_tok(q_pos, q_flag, tile), k_tok, mode, block_size)[0]

    def visit(carry):
      dk, dv = carry
      q, do = q_ref[g, tile, :], do_ref[g, tile, :]
      p = _probs(q, k, allow, lse_ref[g, tile], scale)
      dv = dv + pltriton.dot(p.astype(do.dtype), do, trans_a=True)
      dp = pltriton.dot(do, v, trans_b=True)
      ds = (p * (dp - delta_ref[g, tile][:, None]) * scale).astype(q.dtype)
      return dk + pltriton.dot(ds, q, trans_a=True), dv

    return jax.lax.cond(jnp.max(allow.astype(jnp.int32)) > 0, visit, lambda c: c, carry)

  zeros = jnp.zeros((tk, d), jnp.float32)
  dk, dv = jax.lax.fori_loop(0, groups * n_q, body, (zeros, zeros))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_pos, q_flag, k_pos, k_flag, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *,
               mode, block_size, tk, scale):
  tq, d = q_ref.shape
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  q_tok = masks.Tokens(q_pos[...][None], (q_flag[...][None] & 2) != 0, jnp.ones((1, tq), bool))

  def body(j, dq):
    tile = pl.ds(j * tk, tk)
    allow = masks.allowed(q_tok, _tok(k_pos, k_flag, tile), mode, block_size)[0]

    def visit(dq):
      k = k_ref[tile, :]
      p = _probs(q, k, allow, lse, scale)
      dp = pltriton.dot(do, v_ref[tile, :], trans_b=True)
      ds = (p * (dp - delta[:, None]) * scale).astype(k.dtype)
      return dq + pltriton.dot(ds, k)

    return jax.lax.cond(jnp.max(allow.astype(jnp.int32)) > 0, visit, lambda c: c, dq)

  dq = jax.lax.fori_loop(0, k_ref.shape[0] // tk, body, jnp.zeros((tq, d), jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _specs(s_pad, t_pad, d, g, tq, tk):
  """BlockSpecs by role for grids whose first two indices are (row, head or kv head)."""
  return {
      "q_meta": pl.BlockSpec((None, tq), lambda i, j, r: (i, r)),
      "k_meta_all": pl.BlockSpec((None, s_pad), lambda i, j, r: (i, 0)),
      "q_meta_all": pl.BlockSpec((None, t_pad), lambda i, j, r: (i, 0)),
      "k_meta": pl.BlockSpec((None, tk), lambda i, j, r: (i, r)),
      "q_tile": pl.BlockSpec((None, None, tq, d), lambda i, j, r: (i, j, r, 0)),
      "kv_of_head": pl.BlockSpec((None, None, s_pad, d), lambda i, j, r: (i, j // g, 0, 0)),
      "vec_tile": pl.BlockSpec((None, None, tq), lambda i, j, r: (i, j, r)),
      "kv_tile": pl.BlockSpec((None, None, tk, d), lambda i, j, r: (i, j, r, 0)),
      "q_group": pl.BlockSpec((None, g, t_pad, d), lambda i, j, r: (i, j, 0, 0)),
      "vec_group": pl.BlockSpec((None, g, t_pad), lambda i, j, r: (i, j, 0)),
  }


def _meta(q_tok: masks.Tokens, k_tok: masks.Tokens, mode, block_size, tq, tk):
  """(q_pos, q_flag, k_pos, k_flag), each [b, len] int32; flags: 1 valid, 2 noisy."""
  del mode, block_size, tq, tk
  flags = lambda tok: tok.valid.astype(jnp.int32) + 2 * tok.noisy.astype(jnp.int32)
  return (q_tok.positions, flags(q_tok), k_tok.positions, flags(k_tok))


def _forward(q, k, v, meta, st: pallas_vjp.Static):
  """q [b, h, t, d], k/v [b, kh, s, d], meta (q_pos, q_flag, k_pos, k_flag) -> (o [b, h, t, d], lse [b, h, t])."""
  b, h, t, d = q.shape
  s, g = k.shape[2], h // k.shape[1]
  sp = _specs(s, t, d, g, st.tq, st.tk)
  kernel = functools.partial(_fwd_kernel, mode=st.mode, block_size=st.block_size, tk=st.tk, scale=d ** -0.5)
  return pl.pallas_call(
      kernel, grid=(b, h, t // st.tq),
      in_specs=[sp["q_meta"], sp["q_meta"], sp["k_meta_all"], sp["k_meta_all"], sp["q_tile"], sp["kv_of_head"],
                sp["kv_of_head"]],
      out_specs=[sp["q_tile"], sp["vec_tile"]],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
      compiler_params=_PARAMS, interpret=st.interpret, name="train_flash_fwd",
  )(*meta, q, k, v)


def _backward(q, k, v, meta, o, lse, do, st: pallas_vjp.Static):
  """(dq, dk, dv) of `_forward`'s output from the saved log-sum-exp: dk/dv by key tile, then dq by query tile."""
  b, h, t, d = q.shape
  kh, s = k.shape[1], k.shape[2]
  g, tq, tk, mode, block_size = h // kh, st.tq, st.tk, st.mode, st.block_size
  sp = _specs(s, t, d, g, tq, tk)
  delta = jnp.einsum("bhtd,bhtd->bht", do.astype(jnp.float32), o.astype(jnp.float32))
  scale = d ** -0.5
  dkdv = functools.partial(_dkdv_kernel, mode=mode, block_size=block_size, tq=tq, scale=scale)
  dk, dv = pl.pallas_call(
      dkdv, grid=(b, kh, s // tk),
      in_specs=[sp["q_meta_all"], sp["q_meta_all"], sp["k_meta"], sp["k_meta"], sp["q_group"], sp["kv_tile"],
                sp["kv_tile"], sp["q_group"], sp["vec_group"], sp["vec_group"]],
      out_specs=[sp["kv_tile"], sp["kv_tile"]],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=_PARAMS, interpret=st.interpret, name="train_flash_dkdv",
  )(*meta, q, k, v, do, lse, delta)
  dq_kernel = functools.partial(_dq_kernel, mode=mode, block_size=block_size, tk=tk, scale=scale)
  dq = pl.pallas_call(
      dq_kernel, grid=(b, h, t // tq),
      in_specs=[sp["q_meta"], sp["q_meta"], sp["k_meta_all"], sp["k_meta_all"], sp["q_tile"], sp["kv_of_head"],
                sp["kv_of_head"], sp["q_tile"], sp["vec_tile"], sp["vec_tile"]],
      out_specs=sp["q_tile"],
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_PARAMS, interpret=st.interpret, name="train_flash_dq",
  )(*meta, q, k, v, do, lse, delta)
  return dq, dk, dv


KERNELS = pallas_vjp.FlashKernels(_meta, _forward, _backward)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None, *, interpret: bool = False, q_tile: int = 64, k_tile: int = 64):
  """`dense_xla.attend` through the Triton kernels: q [b, t, h, d], k/v [b, s, kh, d] -> [b, t, h, d].

  Tiles are powers of two >= 16, as is head_dim. q_chunk is not needed (the kernel holds one tile pair at a time).
  """
  del q_chunk
  return pallas_vjp.attend(KERNELS, q, k, v, q_tok, k_tok, mode, block_size, q_tile, k_tile, interpret)
