"""The grouped matmul's CPU path (the tile loop with its custom VJP) and GPU path (tiles) against `jax.lax.ragged_dot`
and its autodiff: values and gradients, empty groups, one group holding every row, rows past the groups, no rows; the
loop's tiles against a numpy construction; the tiles in the MoE block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.model import moe
from lrl_jax.model.grouped_matmul import group_tiles, grouped_matmul, grouped_matmul_loop, grouped_matmul_tiles

PATHS = {"tiles": grouped_matmul_tiles, "loop": grouped_matmul_loop, "platform": grouped_matmul}
SIZES = [[5, 0, 0, 17, 1, 9, 0, 8], [0] * 7 + [40], [40] + [0] * 7, [1] * 8, [0] * 8,
         [37, 2, 61, 0, 15, 90, 33, 62]]  # the last: several tiles per group, the last tile moved back to fit


def _loss(matmul, gs):
  return lambda r, w: jnp.sum(jnp.sin(matmul(r, w, gs)))


def _outputs_and_grads(matmul, r, w, gs):
  """One jitted program: matmul's output and the gradients of Σ sin(output) w.r.t. rows and weights."""
  return jax.jit(lambda r, w, gs: (matmul(r, w, gs), jax.grad(_loss(matmul, gs), (0, 1))(r, w)))(r, w, gs)


@pytest.mark.parametrize("path,sizes", [(p, s) for p in ("tiles", "loop") for s in SIZES]
                         + [("platform", SIZES[-1])])
def test_grouped_matmul_equals_ragged_dot(path, sizes):
  """Values and both gradients (the loop's custom VJP) equal `ragged_dot` and its autodiff, fp32, 1e-5."""
  r = jax.random.normal(jax.random.key(1), (sum(sizes), 12))
  w = jax.random.normal(jax.random.key(2), (8, 12, 5))
  gs = jnp.asarray(sizes, jnp.int32)
  got = jax.tree.leaves(_outputs_and_grads(PATHS[path], r, w, gs))
  want = jax.tree.leaves(_outputs_and_grads(jax.lax.ragged_dot, r, w, gs))
  for a, b in zip(got, want, strict=True):
    assert a.shape == b.shape and np.abs(a - b).max(initial=0) <= 1e-5 * max(1.0, float(np.abs(b).max(initial=0)))
  assert sum(sizes) == 0 or float(np.abs(want[2]).max()) > 0  # the weights' gradient is not trivially zero


def test_loop_rows_past_the_groups_are_zero_and_get_no_gradient():
  """`ragged_dot` semantics when the groups hold fewer rows than given: those rows' outputs and gradients are 0."""
  r = jax.random.normal(jax.random.key(3), (30, 6))
  w = jax.random.normal(jax.random.key(4), (4, 6, 3))
  gs = jnp.asarray([3, 0, 9, 5], jnp.int32)
  got = grouped_matmul_loop(r, w, gs)
  assert np.abs(got - jax.lax.ragged_dot(r, w, gs)).max() <= 1e-5 and not np.any(got[17:])
  got = jax.grad(_loss(grouped_matmul_loop, gs), (0, 1))(r, w)
  want = jax.grad(_loss(jax.lax.ragged_dot, gs), (0, 1))(r, w)
  assert np.abs(got[0] - want[0]).max() <= 1e-5 and not np.any(got[0][17:])
  assert np.abs(got[1] - want[1]).max() <= 1e-5


def test_loop_is_one_program_for_any_group_sizes():
  """The trip count is data: one jitted program (values and gradients) serves different loads."""
  r = jax.random.normal(jax.random.key(5), (64, 8))
  w = jax.random.normal(jax.random.key(6), (4, 8, 5))
  step = jax.jit(jax.value_and_grad(_loss_of_sizes, (0, 1)))
  for sizes in ([16, 16, 16, 16], [0, 64, 0, 0], [1, 2, 3, 58]):
    gs = jnp.asarray(sizes, jnp.int32)
    value, grads = step(r, w, gs)
    want_value, want_grads = jax.value_and_grad(_loss(jax.lax.ragged_dot, gs), (0, 1))(r, w)
    assert abs(float(value) - float(want_value)) <= 1e-4
    for a, b in zip(grads, want_grads):
      assert np.abs(a - b).max() <= 1e-5
  assert step._cache_size() == 1


def _loss_of_sizes(r, w, gs):
  return _loss(grouped_matmul_loop, gs)(r, w)


def test_loop_bfloat16_keeps_dtypes_and_accumulates_in_float32():
  r = jax.random.normal(jax.random.key(7), (200, 16))
  w = jax.random.normal(jax.random.key(8), (3, 16, 8))
  gs = jnp.asarray([150, 10, 40], jnp.int32)
  lo = lambda a: a.astype(jnp.bfloat16)
  got = jax.grad(_loss(grouped_matmul_loop, gs), (0, 1))(lo(r), lo(w))
  want = jax.grad(_loss(jax.lax.ragged_dot, gs), (0, 1))(lo(r).astype(jnp.float32), lo(w).astype(jnp.float32))
  assert got[0].dtype == got[1].dtype == jnp.bfloat16
  for a, b in zip(got, want):  # dw sums 150 rows: within bf16 rounding of the fp32 result
    assert np.abs(np.asarray(a, np.float32) - b).max() <= 2e-2 * float(np.abs(b).max())


@pytest.mark.parametrize("sizes,t", [([5, 0, 0, 17, 1, 9, 0, 8], 4), ([0, 0, 12], 4), ([3, 3, 3], 8), ([0, 0], 2)])
def test_group_tiles_cover_each_group_once(sizes, t):
  """The used tiles, against a numpy walk over the groups: each group's rows in order, T at a time, none shared."""
  tiles = group_tiles(jnp.asarray(sizes, jnp.int32), sum(sizes), t)
  want, start = [], 0
  for g, size in enumerate(sizes):
    want += [(g, lo, min(lo + t, start + size)) for lo in range(start, start + size, t)]
    start += size
  n = int(tiles.count)
  assert n == len(want) <= len(tiles.group)
  assert list(zip(tiles.group[:n].tolist(), tiles.lo[:n].tolist(), tiles.hi[:n].tolist())) == want


def test_tiles_in_the_block():
  """The GPU path in the block (the CPU loop is the block's default here: tests/model/test_moe.py)."""
  r = np.random.default_rng(4)
  x, router, gate, up, down = (jnp.asarray(r.normal(0, s, shape), jnp.float32) for s, shape in
                               ((1.0, (37, 16)), (1.0, (16, 8)), (0.3, (8, 16, 24)), (0.3, (8, 16, 24)),
                                (0.3, (8, 24, 16))))
  routing = moe.route(x, router, 3, True)
  got = moe.experts_grouped(x, routing, gate, up, down, matmul=grouped_matmul_tiles)
  ragged = moe.experts_grouped(x, routing, gate, up, down, matmul=jax.lax.ragged_dot)
  assert np.abs(got - ragged).max() <= 1e-5
