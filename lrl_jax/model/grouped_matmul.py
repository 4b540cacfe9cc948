"""Grouped matmul: rows sorted by group, each group times its own weight matrix (the MoE block's expert projections).

`jax.lax.ragged_dot` on TPU, where it lowers to a grouped GEMM; on CPU a loop over the row tiles the groups actually
use (`grouped_matmul_loop`); elsewhere (GPU) a tiled batched matmul. The last two do FLOPs ∝ rows, not rows × groups
(XLA's CPU `ragged_dot` computes every group on every row).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


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


class GroupTiles(NamedTuple):
  """The row tiles of T rows each group spans, in group order; only the first `count` of the static bound are used."""
  count: jax.Array  # [] int32: Σ_g ceil(size_g / T)
  group: jax.Array  # [bound] int32: the group of each tile
  lo: jax.Array  # [bound] int32: first row of the tile (a row of its group)
  hi: jax.Array  # [bound] int32: one past its last row of the group (≤ lo + T)


def group_tiles(group_sizes: jax.Array, rows: int, t: int) -> GroupTiles:
  """Each group's rows cut into tiles of T from its first row; bound = (rows + groups·(T−1)) // T ≥ Σ ceil(size/T)."""
  groups = group_sizes.shape[0]
  bound = (rows + groups * (t - 1)) // t
  tiles = (group_sizes + t - 1) // t  # [groups]
  tile_end = jnp.cumsum(tiles)
  row_end = jnp.cumsum(group_sizes)
  i = jnp.arange(bound, dtype=jnp.int32)
  group = jnp.clip(jnp.searchsorted(tile_end, i, side="right"), 0, groups - 1)
  lo = row_end[group] - group_sizes[group] + (i - tile_end[group] + tiles[group]) * t
  hi = jnp.minimum(lo + t, row_end[group])
  return GroupTiles(tile_end[-1].astype(jnp.int32), group.astype(jnp.int32), lo.astype(jnp.int32),
                    hi.astype(jnp.int32))


def _tile(x: jax.Array, lo: jax.Array, hi: jax.Array, t: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(start, x[start:start+T], mask [T, 1] of the rows in [lo, hi)): start = lo moved back to fit in x."""
  start = jnp.minimum(lo, x.shape[0] - t)
  row = start + jnp.arange(t)
  return start, lax.dynamic_slice_in_dim(x, start, t), ((row >= lo) & (row < hi))[:, None]


def _merge(out: jax.Array, tile: jax.Array, start: jax.Array, mine: jax.Array) -> jax.Array:
  """out with its rows [start, start+T) replaced by tile's where mine (the rest belong to other groups' tiles)."""
  old = lax.dynamic_slice_in_dim(out, start, mine.shape[0])
  return lax.dynamic_update_slice_in_dim(out, jnp.where(mine, tile, old), start, 0)


def vary_like(x: jax.Array, *like: jax.Array) -> jax.Array:
  """x marked varying over the manual mesh axes any of `like` varies over (unchanged outside a shard_map)."""
  have = set(jax.typeof(x).manual_axis_type.varying)
  axes = tuple(sorted(set().union(*(jax.typeof(a).manual_axis_type.varying for a in like)) - have))
  return lax.pcast(x, axes, to="varying") if axes else x


def varying_zeros(shape, dtype, *like: jax.Array) -> jax.Array:
  """Zeros varying over the manual mesh axes any of `like` varies over (none outside a shard_map): the type a loop
  carry or a `cond` branch must have when the other side computes from `like`."""
  return vary_like(jnp.zeros(shape, dtype), *like)


def _like_primal(ct: jax.Array, primal: jax.Array) -> jax.Array:
  """The cotangent summed over the manual axes it varies over and its primal does not (what autodiff's transpose of
  an implicit pvary does; a custom VJP must do it itself)."""
  manual = set(jax.sharding.get_abstract_mesh().manual_axes)
  extra = tuple(sorted(manual - set(jax.typeof(primal).manual_axis_type.varying)))
  return lax.psum(ct, extra) if extra else ct


def _loop_tile(rows: int, groups: int) -> int:
  return min(tile_rows(rows, 2 * groups), rows)


@jax.custom_vjp
def grouped_matmul_loop(rows: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
  """`ragged_dot` as a loop over the row tiles the groups use: rows [R, a] sorted by group, w [groups, a, b],
  group_sizes [groups] → [R, b].

  Each of the Σ ceil(size/T) tiles (a data-dependent trip count, so no static bound is computed) multiplies T rows
  by its group's matrix, sliced in place, and writes back the rows of its group: FLOPs ≈ (R + groups·T/2)·a·b and no
  weight copies. The VJP is the same loop: dx with w transposed, dw summed per group in float32.
  """
  return _loop_forward(rows, w, group_sizes)


def _loop_forward(rows, w, group_sizes):
  r, b = rows.shape[0], w.shape[2]
  out = varying_zeros((r, b), jnp.result_type(rows, w), rows, w, group_sizes)
  if r == 0:
    return out
  t = _loop_tile(r, w.shape[0])
  tiles = group_tiles(group_sizes, r, t)

  def body(i, out):
    start, x, mine = _tile(rows, tiles.lo[i], tiles.hi[i], t)
    return _merge(out, (x @ w[tiles.group[i]]).astype(out.dtype), start, mine)

  return lax.fori_loop(0, tiles.count, body, out)


def _loop_fwd(rows, w, group_sizes):
  return _loop_forward(rows, w, group_sizes), (rows, w, group_sizes)


def _loop_bwd(res, g):
  rows, w, group_sizes = res
  r = rows.shape[0]
  if r == 0:
    return jnp.zeros_like(rows), jnp.zeros_like(w), None
  t = _loop_tile(r, w.shape[0])
  tiles = group_tiles(group_sizes, r, t)

  def body(i, carry):
    dx, dw = carry
    start, x, mine = _tile(rows, tiles.lo[i], tiles.hi[i], t)
    gt = jnp.where(mine, lax.dynamic_slice_in_dim(g, start, t), 0)  # [T, b], other groups' rows zeroed
    e = tiles.group[i]
    dx = _merge(dx, (gt @ w[e].T).astype(dx.dtype), start, mine)
    return dx, dw.at[e].add(jnp.einsum("ta,tb->ab", x, gt, preferred_element_type=jnp.float32))

  dx, dw = lax.fori_loop(0, tiles.count, body, (varying_zeros(rows.shape, rows.dtype, *res, g),
                                                    varying_zeros(w.shape, jnp.float32, *res, g)))
  return _like_primal(dx, rows), _like_primal(dw, w).astype(w.dtype), None


grouped_matmul_loop.defvjp(_loop_fwd, _loop_bwd)


def grouped_matmul(rows: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
  """rows [R, a] sorted by group times their group's w [groups, a, b]: `ragged_dot` where it lowers to a grouped
  GEMM (TPU), the tile loop on CPU, the tiled batched matmul elsewhere (GPU); chosen when the program is lowered for
  its platform."""
  return jax.lax.platform_dependent(rows, w, group_sizes, tpu=jax.lax.ragged_dot, cpu=grouped_matmul_loop,
                                    default=grouped_matmul_tiles)
