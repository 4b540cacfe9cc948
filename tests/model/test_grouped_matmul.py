"""The grouped matmul's CPU/GPU path (tiles) against `jax.lax.ragged_dot`: values and gradients, empty groups, one
group holding every row, no rows; and the MoE block on either."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.model import moe
from lrl_jax.model.grouped_matmul import grouped_matmul, grouped_matmul_tiles


@pytest.mark.parametrize("sizes", [[5, 0, 0, 17, 1, 9, 0, 8], [0] * 7 + [40], [40] + [0] * 7, [1] * 8, [0] * 8])
def test_tiled_grouped_matmul_equals_ragged_dot(sizes):
  """Empty groups, one group holding every row, groups smaller and larger than a tile, no rows at all."""
  r = jax.random.normal(jax.random.key(1), (sum(sizes), 12))
  w = jax.random.normal(jax.random.key(2), (8, 12, 5))
  gs = jnp.asarray(sizes, jnp.int32)
  want = jax.lax.ragged_dot(r, w, gs)
  for got in (grouped_matmul_tiles(r, w, gs), grouped_matmul(r, w, gs)):
    assert got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-5)
  if sum(sizes):
    g_tiles = jax.grad(lambda r, w: jnp.sum(jnp.sin(grouped_matmul_tiles(r, w, gs))), (0, 1))(r, w)
    g_ragged = jax.grad(lambda r, w: jnp.sum(jnp.sin(jax.lax.ragged_dot(r, w, gs))), (0, 1))(r, w)
    for a, b in zip(g_tiles, g_ragged):
      assert np.abs(a - b).max() <= 1e-5


def test_both_matmuls_in_the_block():
  r = np.random.default_rng(4)
  x, router, gate, up, down = (jnp.asarray(r.normal(0, s, shape), jnp.float32) for s, shape in
                               ((1.0, (37, 16)), (1.0, (16, 8)), (0.3, (8, 16, 24)), (0.3, (8, 16, 24)),
                                (0.3, (8, 24, 16))))
  routing = moe.route(x, router, 3, True)
  tiles = moe.experts_grouped(x, routing, gate, up, down, matmul=grouped_matmul_tiles)
  ragged = moe.experts_grouped(x, routing, gate, up, down, matmul=jax.lax.ragged_dot)
  assert np.abs(tiles - ragged).max() <= 1e-5
