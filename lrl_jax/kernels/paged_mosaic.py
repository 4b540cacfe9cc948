"""Pallas TPU (Mosaic) paged-prefix attention: each slot's queries against only the KV pages its page table lists.

The TPU twin of `paged_triton.py` (same entry point, same unnormalised (acc, max, sum) result). One program per slot
holds, for every kv head, the G = heads/kv_heads query heads of the call's t queries as [t*G, d] rows (GQA packing:
one page read serves all G heads). Page table and lengths are scalar-prefetched into SMEM; the program walks steps of
`per_step` pages up to ceil(length/page), copying each step's whole pages [page, kv_heads, d] from the pool in HBM
into a double-buffered VMEM scratch (the next step's copy runs while this one computes), and folds them in with a
float32 online softmax (the running max/sum kept lane-broadcast in VMEM, updated in place), merged into the caller's
state by `softmax.combine`. A slot costs what it holds: neither the pool size nor the page-table width bounds the loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from lrl_jax.kernels.paged_shards import per_kv_head_shard
from lrl_jax.kernels.softmax import NEG, Partial, combine

_LANES = 128  # the running max/sum are kept broadcast over one vreg's lanes: [rows, 128]


def _head_rows(page_buf, h: int) -> jax.Array:
  """Keys of kv head h from a VMEM ref [pages, page, kh, d] → [pages*page, d] (a strided sublane load)."""
  n, page, _, d = page_buf.shape
  return page_buf[:, :, h, :].reshape(n * page, d)


def _kernel(length_ref, layer_ref, table_ref, q_ref, k_hbm, v_hbm, acc_ref, m_ref, l_ref, k_buf, v_buf, sems, *,
            page: int, per_step: int, width: int):
  """q_ref [kh, rows, d] (scaled); k_hbm/v_hbm: every layer's pool [layers, pages, page, kh, d] left in HBM, read
  at layer_ref's layer (SMEM, like the page table); k_buf/v_buf VMEM
  [2, per_step, page, kh, d]; sems DMA [2 (k, v), 2 (buffer)]. Writes acc [kh, rows, d], m/l [kh, rows, 128]."""
  kh, rows, _ = q_ref.shape
  keys = per_step * page
  slot = pl.program_id(0)
  length = length_ref[slot]
  layer = layer_ref[0]
  used = jax.lax.div(length + page - 1, page)  # pages holding positions < length (lax.div: no sign op in Mosaic)
  steps = jax.lax.div(used + per_step - 1, per_step)

  def copies(step, buf):
    """DMA descriptors of step's pages into buffer `buf`; pages past the slot's last one repeat it (masked)."""
    out = []
    for j in range(per_step):
      pid = table_ref[slot * width + jnp.minimum(step * per_step + j, used - 1)]
      out.append(pltpu.make_async_copy(k_hbm.at[layer, pid], k_buf.at[buf, j], sems.at[0, buf]))
      out.append(pltpu.make_async_copy(v_hbm.at[layer, pid], v_buf.at[buf, j], sems.at[1, buf]))
    return out

  acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
  m_ref[...] = jnp.full(m_ref.shape, NEG, jnp.float32)
  l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)

  @pl.when(steps > 0)
  def _():
    for c in copies(0, 0):
      c.start()

  def body(step, carry):
    buf = jax.lax.rem(step, 2)

    @pl.when(step + 1 < steps)
    def _():
      for c in copies(step + 1, 1 - buf):
        c.start()

    for c in copies(step, buf):
      c.wait()
    # float32 pools: full-precision passes; bf16: one pass (an explicit choice, whatever the global default says)
    prec = jax.lax.Precision.HIGHEST if k_buf.dtype == jnp.float32 else jax.lax.Precision.DEFAULT
    allow = step * keys + jax.lax.broadcasted_iota(jnp.int32, (rows, keys), 1) < length  # [rows, keys]
    for h in range(kh):
      k, v = _head_rows(k_buf.at[buf], h), _head_rows(v_buf.at[buf], h)  # [keys, d]
      q = q_ref[h].astype(k.dtype)  # MXU operands in the pool's dtype, float32 accumulation
      s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=prec, preferred_element_type=jnp.float32)
      s = jnp.where(allow, s, NEG)  # [rows, keys]
      m_prev = m_ref[h]  # [rows, 128]
      m_new = jnp.maximum(m_prev, s.max(axis=1, keepdims=True))
      p = jnp.where(allow, jnp.exp(s - m_new[:, :1]), 0.0)
      corr = jnp.exp(m_prev - m_new)
      m_ref[h] = m_new
      l_ref[h] = corr * l_ref[h] + p.sum(axis=1, keepdims=True)
      pv = jnp.dot(p.astype(v.dtype), v, precision=prec, preferred_element_type=jnp.float32)  # [rows, d]
      acc_ref[h] = corr[:, :1] * acc_ref[h] + pv
    return carry

  jax.lax.fori_loop(0, steps, body, 0)


def _prefix_state(q, pool_k, pool_v, page_table, length, layer, interpret) -> Partial:
  """The kernel's state over every slot's cached positions: q [b, t, h, d] → Partial [b, t, kh, g, ...]."""
  b, t, h, d = q.shape
  page, kh = pool_k.shape[2], pool_k.shape[3]
  g = h // kh
  rows = -(-t * g // 8) * 8  # float32 sublanes
  per_step = max(1, _LANES // page)  # scores [rows, per_step*page]: at least one lane-width of keys per step
  qp = (q.astype(jnp.float32) * d ** -0.5).reshape(b, t, kh, g, d).transpose(0, 2, 1, 3, 4).reshape(b, kh, t * g, d)
  qp = jnp.pad(qp, ((0, 0), (0, 0), (0, rows - t * g), (0, 0)))  # [b, kh, rows, d]
  n = page_table.shape[1]
  block = lambda last: pl.BlockSpec((None, kh, rows, last), lambda i, *_: (i, 0, 0, 0))
  buffer = lambda dtype: pltpu.VMEM((2, per_step, page, kh, d), dtype)
  acc, m, l = pl.pallas_call(
      functools.partial(_kernel, page=page, per_step=per_step, width=n),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=3, grid=(b,),
          in_specs=[block(d), pl.BlockSpec(memory_space=pl.ANY), pl.BlockSpec(memory_space=pl.ANY)],
          out_specs=[block(d), block(_LANES), block(_LANES)],
          scratch_shapes=[buffer(pool_k.dtype), buffer(pool_v.dtype), pltpu.SemaphoreType.DMA((2, 2))]),
      out_shape=[jax.ShapeDtypeStruct((b, kh, rows, d), jnp.float32),
                 jax.ShapeDtypeStruct((b, kh, rows, _LANES), jnp.float32),
                 jax.ShapeDtypeStruct((b, kh, rows, _LANES), jnp.float32)],
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
      interpret=interpret,
      name="paged_prefix_attention_tpu",
  )(length.astype(jnp.int32), jnp.reshape(layer, (1,)).astype(jnp.int32), page_table.astype(jnp.int32).reshape(-1), qp,
    pool_k, pool_v)
  unpack = lambda a: a[:, :, :t * g].reshape(b, kh, t, g, *a.shape[3:]).swapaxes(1, 2)  # [b, t, kh, g, ...]
  return Partial(unpack(acc), unpack(m[..., 0]), unpack(l[..., 0]))


def prefix_partial(state: Partial, q, pool_k, pool_v, page_table, length, layer, *, interpret=False) -> Partial:
  """`paged_xla.prefix_partial` through the Mosaic kernel: q [b, t, h, d], pools [layers, pages, page, kh, d]
  read at `layer` (a scalar), page_table [b, n] int32, length [b] int32 → state merged with every slot's cached
  positions. `interpret`:
  False (compile for TPU), or True / `pltpu.InterpretParams()` to run it on CPU."""
  kernel = per_kv_head_shard(functools.partial(_prefix_state, interpret=interpret), pool_k.shape[3])
  return combine(state, kernel(q, pool_k, pool_v, page_table, length, layer))
