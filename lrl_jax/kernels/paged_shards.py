"""The paged-prefix Pallas kernels per shard of the mesh axes left automatic (the engine's `tensor`).

A Pallas call is opaque to the SPMD partitioner: called with a kv-head-split KV pool it all-gathers every layer's
pool to each device first (SDAR-30B-A3B at 256 slots, tensor 4 on h200x8: 2 × 49.5 GiB of temporaries), and Mosaic
does not lower at all unless every axis is manual. Mapping the kernel over those axes keeps each device on its own
kv heads. Both kernels use it (`paged_triton`, `paged_mosaic`).
"""

from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

from lrl_jax.kernels.softmax import Partial


def per_kv_head_shard(fn, kv_heads: int):
  """`fn(q [b, t, h, d], pool_k, pool_v [layers, pages, page, kh, d], page_table, length, layer) → Partial` mapped
  over the mesh's automatic axes: kv heads (and their query heads) split over them when they divide, else every
  device does all. `fn` itself where no axis is automatic (no mesh, or all manual)."""
  mesh = jax.sharding.get_abstract_mesh()
  auto = () if mesh.empty else tuple(a for a in mesh.axis_names if a not in mesh.manual_axes)
  if not auto:
    return fn
  heads = auto if kv_heads % math.prod(mesh.shape[a] for a in auto) == 0 else None
  x4, x5 = P(None, None, heads, None), P(None, None, heads, None, None)
  pool = P(None, None, None, heads, None)
  return jax.shard_map(fn, mesh=mesh, in_specs=(x4, pool, pool, P(), P(), P()), out_specs=Partial(x5, x4, x4),
                       axis_names=set(auto), check_vma=False)
