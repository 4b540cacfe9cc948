"""The custom VJP and shard_map wrapper of the Pallas flash kernels (Triton and Mosaic), written once.

A platform's kernels come as a `FlashKernels`: `meta` (per-token metadata arrays, each [batch, ...], from the padded
tokens), `forward` (o [b, h, t, d], lse [b, h, t] float32) and `backward` (dq, dk, dv), all over heads-first
activations padded to whole tiles. `attend` pads, runs the forward under a custom VJP whose backward is the
kernels', and under an active mesh runs both per shard (`shard_map` over the batch and kv-head axes the activations
are sharded on, so inputs are never gathered). The output and log-sum-exp carry the remat names "attn_out" /
"attn_lse" (`model/remat.py`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P

from lrl_jax.kernels import masks


class Static(NamedTuple):
  """Static settings of one attention call: mask rule, tiles, interpreter, and the shard_map specs (None: no mesh)."""
  mode: str
  block_size: int | None
  tq: int
  tk: int
  interpret: Any  # bool, or the platform's interpreter parameters
  act: P | None  # [b, heads, len, d] arrays and, without the last entry, [b, heads, len] vectors
  meta: tuple[P, ...] | None  # one spec per metadata array


class FlashKernels(NamedTuple):
  """One platform's kernels. meta(q_tok, k_tok, mode, block_size, tq, tk) -> tuple of [b, ...] arrays;
  forward(q, k, v, meta, Static) -> (o, lse); backward(q, k, v, meta, o, lse, do, Static) -> (dq, dk, dv)."""
  meta: Callable
  forward: Callable
  backward: Callable


def _sharded(fn, st: Static, in_specs, out_specs):
  """fn per shard of the active mesh (shard_map over batch and heads), or fn itself without one."""
  if st.act is None:
    return fn
  return jax.shard_map(fn, mesh=jax.sharding.get_abstract_mesh(), in_specs=in_specs, out_specs=out_specs,
                       check_vma=False)


def _vec(st: Static) -> P | None:
  return None if st.act is None else P(*st.act[:3])


def _fwd_sharded(q, k, v, meta, kernels: FlashKernels, st: Static):
  fn = lambda q, k, v, meta: kernels.forward(q, k, v, meta, st)
  o, lse = _sharded(fn, st, (st.act, st.act, st.act, st.meta), (st.act, _vec(st)))(q, k, v, meta)
  return checkpoint_name(o, "attn_out"), checkpoint_name(lse, "attn_lse")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _flash(q, k, v, meta, kernels: FlashKernels, st: Static):
  return _fwd_sharded(q, k, v, meta, kernels, st)[0]


def _flash_fwd(q, k, v, meta, kernels: FlashKernels, st: Static):
  o, lse = _fwd_sharded(q, k, v, meta, kernels, st)
  return o, (q, k, v, meta, o, lse)


def _flash_bwd(kernels: FlashKernels, st: Static, res, do):
  fn = lambda q, k, v, meta, o, lse, do: kernels.backward(q, k, v, meta, o, lse, do, st)
  specs = (st.act, st.act, st.act, st.meta, st.act, _vec(st), st.act)
  return (*_sharded(fn, st, specs, (st.act,) * 3)(*res, do), None)


_flash.defvjp(_flash_fwd, _flash_bwd)


def _mesh_axes(names, size: int, mesh) -> tuple[str, ...] | None:
  """Mesh axes the active logical rules map `names` to, kept while they divide `size` (None: none)."""
  spec = nn.logical_to_mesh_axes(names)
  axes = spec[0] if spec else None
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  kept, n = [], 1
  for a in axes:
    if size % (n * mesh.shape[a]) == 0:
      kept.append(a)
      n *= mesh.shape[a]
  return tuple(kept) or None


def attend(kernels: FlashKernels, q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str,
           block_size: int | None, tq: int, tk: int, interpret) -> jax.Array:
  """q [b, t, h, d], k/v [b, s, kh, d] -> [b, t, h, d] through `kernels` with tiles tq x tk (any t and s: padded
  with invalid tokens, padded queries dropped)."""
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  t_pad, s_pad = -(-t // tq) * tq, -(-s // tk) * tk
  q_tok, k_tok = masks.pad_tokens(q_tok, t_pad), masks.pad_tokens(k_tok, s_pad)
  heads_first = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  meta = kernels.meta(q_tok, k_tok, mode, block_size, tq, tk)
  act = meta_specs = None
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.size > 1:
    batch = _mesh_axes(("batch",), b, mesh)
    heads = _mesh_axes(("kv_heads",), kh, mesh)
    heads = heads if heads and h % mesh.shape[heads[0]] == 0 else None
    act, meta_specs = P(batch, heads, None, None), tuple(P(batch, *(None,) * (m.ndim - 1)) for m in meta)
  st = Static(mode, block_size, tq, tk, interpret, act, meta_specs)
  out = _flash(heads_first(q, t_pad), heads_first(k, s_pad), heads_first(v, s_pad), meta, kernels, st)
  return out.transpose(0, 2, 1, 3)[:, :t]
