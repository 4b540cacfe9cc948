"""Paged-prefix attention of decoding calls: the XLA page walk against a dense softmax over the gathered keys, its
invariance to the page-table bucket, the Pallas kernel (interpret mode) against it, and its H100 lowering."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.model import attention, masks, paged_attention as pa, pallas_paged
from tests.optional import needs_cuda_plugin

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
  return attention.attend(q, jnp.concatenate([k, gk], 1), jnp.concatenate([v, gv], 1), tok, k_tok, "block",
                          block_size)


def test_page_walk_matches_dense_softmax_and_ignores_the_bucket():
  q, k, v, pk, pv, table, length, tok = _inputs()
  want = np.asarray(_dense(q, k, v, pk, pv, table, length, tok))
  got = pa.attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=2)
  valid = np.asarray(tok.valid)[..., None, None]
  assert np.abs(np.where(valid, np.asarray(got) - want, 0)).max() <= 1e-5
  for chunk in (1, 4, 8):  # any chunking is the same softmax up to rounding
    other = pa.attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=chunk)
    assert np.abs(np.where(valid, np.asarray(other) - want, 0)).max() <= 1e-5
  # a wider page-table bucket only lists pages past every row's length, and the walk stops at the longest row: its
  # extra pages (here a NaN page, which would poison any row that read it) are never read, the result is bit-identical
  nan_page = jnp.full((1, PAGE, KH, D), jnp.nan)
  pk_nan, pv_nan = jnp.concatenate([pk, nan_page]), jnp.concatenate([pv, nan_page])
  wide = jnp.concatenate([table, jnp.full((B, 8), PAGES, jnp.int32)], 1)
  assert np.array_equal(np.asarray(pa.attend(q, k, v, tok, pk_nan, pv_nan, wide, length, "block", 4, chunk_pages=2)),
                        np.asarray(got))
  # every layer's pool with a layer index reads the same pages as that layer's pool alone
  layers_k, layers_v = jnp.stack([pv, pk, pv]), jnp.stack([pk, pv, pk])
  assert np.array_equal(np.asarray(pa.attend(q, k, v, tok, layers_k, layers_v, table, length, "block", 4,
                                             chunk_pages=2, layer=jnp.int32(1))), np.asarray(got))


def test_pallas_kernel_matches_xla_path():
  """Interpreted on CPU, compiled on a GPU (launch/device_check.sh runs it there)."""
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    q, k, v, pk, pv, table, length, tok = _inputs(1, dtype)
    want = pa.attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=4)
    # the kernel reads layer 1 of two-layer pools (layer 0 holds the other pool's pages)
    state = pallas_paged.prefix_partial(pa.window_partial(q, k, v, tok, "block", 4), q, jnp.stack([pv, pk]),
                                        jnp.stack([pk, pv]), table, length, jnp.int32(1), interpret=None)
    got = pa.finish(state, q.dtype)
    assert np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32)).max() <= tol



@needs_cuda_plugin
def test_pallas_kernel_lowers_for_h100_deviceless():
  """The kernel compiles through Triton for an H100 target from this CPU host (bf16, head_dim 128, GQA 4)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from lrl_jax.plan import targets

  topo = targets.topology(targets.parse_target("h100x1"))
  mesh = jax.sharding.Mesh(np.asarray(topo.devices), ("d",))
  rep = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, P()))
  b, t, h, kh, d, page, pages, n = 8, 32, 32, 8, 128, 32, 512, 64

  def call(q, pk, pv, table, length, layer):
    zeros = pa.Partial(jnp.zeros((b, t, kh, h // kh, d)), jnp.full((b, t, kh, h // kh), -1e30),
                       jnp.zeros((b, t, kh, h // kh)))
    return pallas_paged.prefix_partial(zeros, q, pk, pv, table, length, layer, interpret=False).acc

  pool = rep((3, pages, page, kh, d), jnp.bfloat16)
  compiled = jax.jit(call).lower(rep((b, t, h, d), jnp.bfloat16), pool, pool, rep((b, n), jnp.int32),
                                 rep((b,), jnp.int32), rep((), jnp.int32)).compile()
  text = compiled.as_text()
  assert "paged_prefix_attention" in text
  assert not re.search(r"bf16\[(1,)?512,32,8,128\]", text)  # the kernel reads its layer in place: no slice is copied


@needs_cuda_plugin
def test_decoding_forward_reads_pages_in_place_on_h100_deviceless():
  """A decoding forward (every layer's pool, Triton prefix) compiled for an H100 copies no layer of the pool: its
  temporaries are far below one layer's pages (before, each layer's k and v pages were sliced out, i.e. copied)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from lrl_jax.model import PagedKV, forward, init_params
  from lrl_jax.plan import targets
  from lrl_jax.weights import tiny

  cfg = tiny.tiny_config()
  topo = targets.topology(targets.parse_target("h100x1"))
  mesh = jax.sharding.Mesh(np.asarray(topo.devices), ("d",))
  rep = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P()))
  b, t, page, pages = 4, 16, 16, 8192
  params = jax.tree.map(rep, jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), jnp.bfloat16)))
  pool = rep(jax.ShapeDtypeStruct((cfg.num_layers, pages, page, cfg.num_kv_heads, cfg.head_dim), jnp.bfloat16))
  ints = lambda *shape: rep(jax.ShapeDtypeStruct(shape, jnp.int32))
  prefix = PagedKV(pool, pool, ints(b, 8), ints(b))
  call = lambda p, tokens, pos, x: forward(p, cfg, tokens, pos, mode="block", block_size=t, prefix=x,
                                           attn_impl="pallas", dtype=jnp.bfloat16)[0]
  compiled = jax.jit(call).lower(params, ints(b, t), ints(b, t), prefix).compile()
  layer_bytes = pool.size // cfg.num_layers * 2
  assert "paged_prefix_attention" in compiled.as_text()
  assert compiled.memory_analysis().temp_size_in_bytes < layer_bytes / 4
