"""The Triton paged-prefix kernel (interpret mode) against the XLA page walk, and its H100 lowering."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.kernels import paged_triton, paged_xla
from lrl_jax.kernels.softmax import Partial
from lrl_jax.model import attention
from tests.kernels import hlo_util
from tests.kernels.test_paged_xla import _inputs
from tests.optional import needs_cuda_plugin


def test_pallas_kernel_matches_xla_path():
  """Interpreted on CPU, compiled on a GPU (launch/device_check.sh runs it there)."""
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    q, k, v, pk, pv, table, length, tok = _inputs(1, dtype)
    want = attention.paged_attend(q, k, v, tok, pk, pv, table, length, "block", 4, chunk_pages=4)
    # the kernel reads layer 1 of two-layer pools (layer 0 holds the other pool's pages)
    state = paged_triton.prefix_partial(paged_xla.window_partial(q, k, v, tok, "block", 4), q, jnp.stack([pv, pk]),
                                        jnp.stack([pk, pv]), table, length, jnp.int32(1), interpret=None)
    got = paged_xla.finish(state, q.dtype)
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
    zeros = Partial(jnp.zeros((b, t, kh, h // kh, d)), jnp.full((b, t, kh, h // kh), -1e30),
                       jnp.zeros((b, t, kh, h // kh)))
    return paged_triton.prefix_partial(zeros, q, pk, pv, table, length, layer, interpret=False).acc

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


@needs_cuda_plugin
def test_engine_compiles_with_the_kernel_on_an_h100_mesh():
  """attn_impl="pallas" in the engine compiled for h100x8 (slots over fsdp=4, kv heads over tensor=2): the Triton
  prefix runs per tensor shard (`kernels/paged_shards.py`), so no collective gathers the KV pool. Before, the
  partitioner gathered every layer's pool over its kv-head split for the opaque kernel (SDAR-30B-A3B at tensor 4:
  2 × 49.5 GiB of temporaries per device)."""
  from lrl_jax.plan import targets

  engine = hlo_util.pallas_engine(targets.topology(targets.parse_target("h100x8")).devices, 4, 2, 16)
  assert "paged_prefix_attention" in engine.text
  pool = hlo_util.pool_pattern(engine.shape)
  gathers = hlo_util.gathered_shapes(engine.text)
  assert gathers and not any(pool.search(g) for g in gathers), gathers
