"""Grouped matmul: rows sorted by group, each group times its own weight matrix (the MoE block's expert projections).

`jax.lax.ragged_dot` on TPU, where it lowers to a grouped GEMM; elsewhere a tiled batched matmul whose FLOPs scale
with the rows, not rows × groups (XLA's CPU `ragged_dot` computes every group on every row).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def tile_rows(rows: int, groups: int) -> int:
  """Tile height of `grouped_matmul_tiles`: about rows / groups (a power of two, at least 8), so the tiles hold at
  most ~2× the rows and the (tile, group) pairs, each a copy of its group's weights, number ~2× the groups at most
  whatever the row count (a fixed height would copy the weights rows / height times: 22 GB per projection for a
  training micro-batch of SDAR-30B-A3B)."""
  return int(max(8, 2 ** round(math.log2(max(1, rows // max(1, groups))))))


def grouped_matmul_tiles(rows: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
  """`ragged_dot` as one batched matmul over (tile, group) pairs: rows [R, a] sorted by group, w [groups, a, b],
  group_sizes [groups] → [R, b].

  The rows are cut into tiles of T; each group touches the tiles its rows span, so there are at most
  tiles + groups - 1 (tile, group) pairs (a static bound; spare pairs are masked). Each pair multiplies its tile,
  with the rows of other groups zeroed, by its group's weight, and adds the result into its tile: FLOPs ≈ (R + groups
  × T) · a · b instead of R · groups · a · b. XLA's CPU lowering of `ragged_dot` computes every group on every
  row.
  """
  r, a = rows.shape
  groups, _, b = w.shape
  if r == 0:
    return jnp.zeros((0, b), jnp.result_type(rows, w))
  t = tile_rows(r, groups)
  tiles = -(-r // t)
  pairs = tiles + groups - 1
  ends = jnp.cumsum(group_sizes)
  starts = ends - group_sizes
  first = starts // t
  count = jnp.where(group_sizes > 0, (jnp.maximum(ends, 1) - 1) // t - first + 1, 0)  # tiles each group spans
  offsets = jnp.cumsum(count) - count
  pair = jnp.arange(pairs)
  group = jnp.clip(jnp.searchsorted(jnp.cumsum(count), pair, side="right"), 0, groups - 1)  # [pairs]
  tile = jnp.clip(first[group] + pair - offsets[group], 0, tiles - 1)
  row = tile[:, None] * t + jnp.arange(t)  # [pairs, T]
  mine = (pair < jnp.sum(count))[:, None] & (row >= starts[group][:, None]) & (row < ends[group][:, None])
  padded = jnp.pad(rows, ((0, tiles * t - r), (0, 0))).reshape(tiles, t, a)
  x = jnp.where(mine[..., None], padded[tile], 0)  # [pairs, T, a]
  y = jnp.einsum("pta,pab->ptb", x, w[group])
  out = jnp.zeros((tiles, t, b), y.dtype).at[tile].add(jnp.where(mine[..., None], y, 0))
  return out.reshape(tiles * t, b)[:r]


def grouped_matmul(rows: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
  """rows [R, a] sorted by group times their group's w [groups, a, b]: `ragged_dot` where it lowers to a grouped
  GEMM (TPU), the tiled batched matmul elsewhere (CPU, GPU); chosen when the program is lowered for its platform."""
  return jax.lax.platform_dependent(rows, w, group_sizes, tpu=jax.lax.ragged_dot, default=grouped_matmul_tiles)
