"""Pallas (GPU, Triton) paged-prefix attention: each row's queries against only the KV pages its page table lists.

One program per (row, kv head) holds the G = heads/kv_heads query heads of the call's t queries as [t*G, d] rows
(GQA packing: one page read serves all G heads). It walks pages 0 .. ceil(length/page)-1 of its row, reading each
page id from the page table, with an online softmax (float32 max/sum/accumulator), so a row costs what it holds,
not what the pool or the page-table bucket could hold. Its unnormalised state (acc, max, sum) is merged into the
caller's (the call's own window, `paged_xla.window_partial`) by `softmax.combine`. Forward only (decoding). On CPU it
runs interpreted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lrl_jax.kernels import softmax
from lrl_jax.kernels.paged_shards import per_kv_head_shard
from lrl_jax.kernels.softmax import Partial

_MIN_ROWS = 16  # Triton's smallest dot operand dimension


def _kernel(length_ref, layer_ref, table_ref, q_ref, k_ref, v_ref, acc_ref, m_ref, l_ref, *, page: int):
  """q_ref [rows, d] (scaled); k/v refs: every layer's pool [layers, pages, page, kh, d], read at layer_ref's layer;
  writes acc [rows, d], m/l [rows]."""
  rows, d = q_ref.shape
  q = q_ref[...]
  length = length_ref[()]
  layer = layer_ref[()]
  h = pl.program_id(1)

  def body(i, state: Partial):
    pid = table_ref[i]
    k = k_ref[layer, pid, :, h, :].astype(jnp.float32)  # [page, d]
    v = v_ref[layer, pid, :, h, :].astype(jnp.float32)
    slot = i * page + jnp.arange(page)
    allow = (slot < length)[None, :]
    return softmax.fold(state, pltriton.dot(q, k, trans_b=True), allow, lambda p: pltriton.dot(p, v))

  state = jax.lax.fori_loop(0, (length + page - 1) // page, body, softmax.empty((rows,), d))
  acc_ref[...], m_ref[...], l_ref[...] = state


def _prefix_state(q, pool_k, pool_v, page_table, length, layer, *, interpret: bool) -> Partial:
  """Every row's cached positions as an unnormalised state [b, t, kh, g, ...] (one shard's kv heads)."""
  b, t, h, d = q.shape
  page, kh = pool_k.shape[2], pool_k.shape[3]
  g = h // kh
  rows = max(_MIN_ROWS, pl.next_power_of_2(t * g))
  qp = (q.astype(jnp.float32) * d ** -0.5).reshape(b, t, kh, g, d).transpose(0, 2, 1, 3, 4).reshape(b, kh, t * g, d)
  qp = jnp.pad(qp, ((0, 0), (0, 0), (0, rows - t * g), (0, 0)))  # [b, kh, rows, d]
  n = page_table.shape[1]
  pool_spec = pl.BlockSpec(pool_k.shape, lambda i, j: (0, 0, 0, 0, 0))
  acc, m, l = pl.pallas_call(
      functools.partial(_kernel, page=page),
      grid=(b, kh),
      in_specs=[pl.BlockSpec((None,), lambda i, j: (i,)), pl.BlockSpec((None,), lambda i, j: (0,)),
                pl.BlockSpec((None, n), lambda i, j: (i, 0)),
                pl.BlockSpec((None, None, rows, d), lambda i, j: (i, j, 0, 0)), pool_spec, pool_spec],
      out_specs=[pl.BlockSpec((None, None, rows, d), lambda i, j: (i, j, 0, 0)),
                 pl.BlockSpec((None, None, rows), lambda i, j: (i, j, 0)),
                 pl.BlockSpec((None, None, rows), lambda i, j: (i, j, 0))],
      out_shape=[jax.ShapeDtypeStruct((b, kh, rows, d), jnp.float32),
                 jax.ShapeDtypeStruct((b, kh, rows), jnp.float32), jax.ShapeDtypeStruct((b, kh, rows), jnp.float32)],
      compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
      interpret=interpret,
      name="paged_prefix_attention",
  )(length.astype(jnp.int32), jnp.reshape(layer, (1,)).astype(jnp.int32), page_table.astype(jnp.int32), qp, pool_k,
    pool_v)
  unpack = lambda a: a[:, :, :t * g].reshape(b, kh, t, g, *a.shape[3:]).swapaxes(1, 2)  # [b, t, kh, g, ...]
  return Partial(unpack(acc), unpack(m), unpack(l))


def prefix_partial(state: Partial, q, pool_k, pool_v, page_table, length, layer, *,
                   interpret: bool | None = None) -> Partial:
  """`paged_xla.prefix_partial` through the kernel: q [b, t, h, d], pools [layers, pages, page, kh, d] read
  at `layer` (a scalar: no layer is sliced out, which would copy it), page_table [b, n] int32, length [b] int32 →
  state merged with every row's cached positions. Under a mesh, per shard of its automatic axes (`paged_shards`)."""
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  kernel = per_kv_head_shard(functools.partial(_prefix_state, interpret=interpret), pool_k.shape[3])
  return softmax.combine(state, kernel(q, pool_k, pool_v, page_table, length, layer))
