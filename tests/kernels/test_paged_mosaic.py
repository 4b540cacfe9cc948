"""The Pallas TPU (Mosaic) paged-prefix kernel: interpreted on CPU against the XLA page walk, the engine's greedy
tokens through it, its deviceless TPU compile at SDAR-8B shape, and the engine picking it on a TPU mesh."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from lrl_jax.decode import DecodeConfig, Decoder
from lrl_jax.kernels import masks, paged_mosaic, paged_xla, table as kernel_table
from lrl_jax.kernels.softmax import Partial
from lrl_jax.model.attention import paged_attend
from lrl_jax.weights import load_checkpoint, tiny
from tests.kernels import hlo_util
from tests.optional import needs_libtpu

B, T, H, KH, D = 3, 8, 4, 2, 16


def _inputs(page, length, table, seed, dtype):
  """Slots of `length` positions over pool pages listed out of order in `table` [B, n]."""
  rng = np.random.default_rng(seed)
  arr = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  length = jnp.asarray(length, jnp.int32)
  valid = jnp.arange(T)[None] < jnp.asarray([[8], [7], [8]])
  tok = masks.make_tokens(length[:, None] + jnp.arange(T)[None], valid=valid)
  pages = 12
  return (arr(B, T, H, D), arr(B, T, KH, D), arr(B, T, KH, D), arr(pages, page, KH, D), arr(pages, page, KH, D),
          jnp.asarray(table, jnp.int32), length, tok)


# (page, lengths, table): a partly filled last page, a partial single page, an empty slot. Pages of 16 run one step of
# 8 pages (all but the first 2 repeats of the last, masked); pages of 64 run 3 steps of 2 (both DMA buffers, a
# repeated page).
CASES = [(16, [18, 4, 0], [[3, 1, 7, 0, 11, 2, 2, 2], [2, 9, 0, 0, 0, 0, 0, 0], [5, 4, 6, 8, 10, 1, 0, 3]]),
         (64, [300, 64, 0], [[9, 3, 11, 0, 6, 0], [7, 0, 0, 0, 0, 0], [1, 2, 4, 5, 8, 10]])]


def _kernel_out(q, k, v, tok, pk, pv, table, length):
  # layer 1 of two-layer pools (layer 0 holds the other pool's pages)
  state = paged_mosaic.prefix_partial(paged_xla.window_partial(q, k, v, tok, "block", 4), q, jnp.stack([pv, pk]),
                                      jnp.stack([pk, pv]), table, length, jnp.int32(1),
                                      interpret=pltpu.InterpretParams())
  return np.asarray(paged_xla.finish(state, q.dtype), np.float32)


@pytest.mark.parametrize("page,length,table", CASES)
def test_interpreted_kernel_matches_xla_page_walk(page, length, table):
  """TPU interpret mode (DMAs and semaphores simulated, scratch NaN-filled until written) against the XLA walk."""
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    q, k, v, pk, pv, table_, length_, tok = _inputs(page, length, table, 1, dtype)
    want = np.asarray(paged_attend(q, k, v, tok, pk, pv, table_, length_, "block", 4, chunk_pages=2), np.float32)
    got = _kernel_out(q, k, v, tok, pk, pv, table_, length_)
    assert np.abs(got - want).max() <= tol, dtype
  # a wider page table (the bucket of a longer neighbour) changes nothing: the loop bound is the slot's own length
  wide = jnp.concatenate([table_, jnp.zeros((B, 6), jnp.int32)], 1)
  assert np.array_equal(_kernel_out(q, k, v, tok, pk, pv, wide, length_), got)


def test_engine_greedy_tokens_through_the_kernel(tmp_path, monkeypatch):
  """The engine's "pallas" prefix, routed on this CPU host to the TPU kernel (interpreted), decodes the same greedy
  tokens as the XLA page walk; prompts of up to 12 tokens, 10 new tokens, pages of 8 positions."""
  cfg, params, _ = load_checkpoint(tiny.make_hf_checkpoint(str(tmp_path), tiny.tiny_config(), seed=0, init_std=0.3))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61], [30]]
  calls = []

  def tpu_kernel(*args, **kw):
    calls.append(1)
    return paged_mosaic.prefix_partial(*args, interpret=True)

  monkeypatch.setitem(kernel_table.KERNELS, ("paged", "triton"), tpu_kernel)  # the CPU branch of paged_attend
  run = lambda impl: Decoder(cfg, DecodeConfig(block_size=4, steps=2, threshold=0.5, greedy=True, max_new_tokens=10,
                                               attn_impl=impl), batch_size=2, max_prompt_len=12,
                             page_size=8).generate(params, prompts)
  want, got = run("xla"), run("pallas")
  assert calls, "the kernel was not traced"
  assert [r.response_ids.tolist() for r in got] == [r.response_ids.tolist() for r in want]
  assert [r.step_map.tolist() for r in got] == [r.step_map.tolist() for r in want]


def test_auto_resolves_to_the_kernel_on_gpu_and_tpu():
  auto = DecodeConfig()
  assert [auto.for_platform(p).attn_impl for p in ("tpu", "gpu", "cpu")] == ["pallas", "pallas", "xla"]
  assert DecodeConfig(attn_impl="xla").for_platform("tpu").attn_impl == "xla"


@needs_libtpu
def test_kernel_compiles_for_tpu_deviceless(v5e_devices):
  """Mosaic compiles it for v5e from this CPU host at SDAR-8B shape (bf16, head_dim 128, GQA 4, pages of 32, a
  window of 32): the kernel is one tpu_custom_call reading the pool in place (no instruction copies the pool)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = jax.sharding.Mesh(np.asarray(v5e_devices[:1]), ("d",))
  rep = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, P()))
  b, t, h, kh, d, page, pages, n = 8, 32, 32, 8, 128, 32, 512, 64

  def call(q, pk, pv, table, length, layer):
    g = h // kh
    empty = Partial(jnp.zeros((b, t, kh, g, d)), jnp.full((b, t, kh, g), -1e30), jnp.zeros((b, t, kh, g)))
    return paged_mosaic.prefix_partial(empty, q, pk, pv, table, length, layer)

  pool = rep((3, pages, page, kh, d), jnp.bfloat16)  # every layer's pages, read at `layer`
  text = jax.jit(call).lower(rep((b, t, h, d), jnp.bfloat16), pool, pool, rep((b, n), jnp.int32),
                             rep((b,), jnp.int32), rep((), jnp.int32)).compile().as_text()
  kernel = [line for line in text.splitlines() if 'custom_call_target="tpu_custom_call"' in line]
  assert len(kernel) == 1 and "paged_prefix_attention_tpu" in kernel[0]
  assert len(re.findall(r"= bf16\[3,512,32,8,128\]", text)) == 2  # the two pool parameters, nothing else
  assert not re.search(r"bf16\[(1,)?512,32,8,128\]", text)  # no layer of the pool is sliced out (copied)


@needs_libtpu
def test_engine_compiles_with_the_kernel_on_a_tpu_mesh(v5e_devices):
  """attn_impl="pallas" in the engine compiled for v5e (slots over fsdp=2, kv heads over tensor=2): the prefix goes
  through the Mosaic kernel (nested in a shard_map over the tensor axis), reading each layer's pages in place (no
  layer of the pool is copied), and no collective gathers the pool."""
  engine = hlo_util.pallas_engine(v5e_devices, 2, 2, 8)
  text, shape = engine.text, engine.shape
  assert "paged_prefix_attention_tpu" in text
  layer_pages = rf"bf16\[(1,)?{shape.pages},{shape.page_size},1,128\]"  # one layer of a device's pool
  assert not re.search(layer_pages, text), "a layer of the pool is sliced out (copied) for the kernel"
  pool = hlo_util.pool_pattern(shape)
  assert not any(pool.search(g) for g in hlo_util.gathered_shapes(text)), hlo_util.gathered_shapes(text)
