"""Paged-prefix attention of decoding calls: the XLA page walk against a dense softmax over the gathered keys, and its
invariance to the page-table bucket."""

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.kernels import dense_xla, masks
from lrl_jax.model.attention import paged_attend

B, T, H, KH, D, PAGE, PAGES = 3, 8, 4, 2, 16, 4, 12


def _inputs(seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  arr = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  table = jnp.asarray([[3, 1, 7, 0, 11, 2, 2, 2], [2, 9, 0, 0, 0, 0, 0, 0], [5, 4, 6, 8, 10, 1, 0, 3]], jnp.int32)
  length = jnp.asarray([18, 4, 0], jnp.int32)  # a partly filled last page, one page, nothing cached
  tok = masks.make_tokens(length[:, None] + jnp.arange(T)[None], valid=jnp.arange(T)[None] < jnp.asarray([[8], [7], [8]]))
  return arr(B, T, H, D), arr(B, T, KH, D), arr(B, T, KH, D), arr(PAGES, PAGE, KH, D), arr(PAGES, PAGE, KH, D), table, length, tok


def _dense(q, k, v, pk, pv, table, length, tok, block_size=4):
  """Independent reference: gather each row's pages, concatenate after its own keys, one masked softmax."""
  n = table.shape[1]
  gk = pk[table].reshape(B, n * PAGE, KH, D)
  gv = pv[table].reshape(B, n * PAGE, KH, D)
  slots = jnp.broadcast_to(jnp.arange(n * PAGE), (B, n * PAGE))
  p_tok = masks.Tokens(slots, jnp.zeros_like(slots, bool), slots < length[:, None])
  k_tok = jax.tree.map(lambda a, c: jnp.concatenate([a, c], 1), tok, p_tok)
  return dense_xla.attend(q, jnp.concatenate([k, gk], 1), jnp.concatenate([v, gv], 1), tok, k_tok, "block",
                          block_size)


def test_page_walk_matches_dense_softmax_and_ignores_the_bucket():
  q, k, v, pk, pv, table, length, tok = _inputs()
  want = np.asarray(_dense(q, k, v, pk, pv, table, length, tok))
  got = paged_attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=2)
  valid = np.asarray(tok.valid)[..., None, None]
  assert np.abs(np.where(valid, np.asarray(got) - want, 0)).max() <= 1e-5
  for chunk in (1, 4, 8):  # any chunking is the same softmax up to rounding
    other = paged_attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=chunk)
    assert np.abs(np.where(valid, np.asarray(other) - want, 0)).max() <= 1e-5
  # a wider page-table bucket only lists pages past every row's length, and the walk stops at the longest row: its
  # extra pages (here a NaN page, which would poison any row that read it) are never read, the result is bit-identical
  nan_page = jnp.full((1, PAGE, KH, D), jnp.nan)
  pk_nan, pv_nan = jnp.concatenate([pk, nan_page]), jnp.concatenate([pv, nan_page])
  wide = jnp.concatenate([table, jnp.full((B, 8), PAGES, jnp.int32)], 1)
  assert np.array_equal(np.asarray(paged_attend(q, k, v, tok, pk_nan, pv_nan, wide, length, "block", 4,
                                                chunk_pages=2)), np.asarray(got))
  # every layer's pool with a layer index reads the same pages as that layer's pool alone
  layers_k, layers_v = jnp.stack([pv, pk, pv]), jnp.stack([pk, pv, pk])
  assert np.array_equal(np.asarray(paged_attend(q, k, v, tok, layers_k, layers_v, table, length, "block", 4,
                                                chunk_pages=2, layer=jnp.int32(1))), np.asarray(got))
