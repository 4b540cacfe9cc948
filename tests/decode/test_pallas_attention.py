"""The Pallas cache-attention kernel (CPU interpret mode) vs the XLA path, its tile skip, fallback and selection."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.decode import pallas_attention as pa
from lrl_jax.decode import engine
from lrl_jax.model import attention, forward, init_params, masks
from lrl_jax.weights.tiny import tiny_config


def _qkv(b, t, h, kh, s, d=16, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
  return normal(b, t, h, d), normal(b, s, kh, d), normal(b, s, kh, d)


def _call_tokens(starts, t, valid=None):
  """Metadata of a call of t contiguous tokens per row from each row's start; cache keys follow from it."""
  positions = jnp.asarray(starts)[:, None] + jnp.arange(t)
  return masks.make_tokens(positions, None if valid is None else jnp.asarray(valid))


def _max_diff(q, k, v, q_tok, k_tok, mode, block_size, **kw):
  want = attention.attend(q, k, v, q_tok, k_tok, mode, block_size)
  got = pa.pallas_attend(q, k, v, q_tok, k_tok, mode, block_size, **kw)
  assert np.isfinite(np.asarray(got)).all()
  return float(jnp.abs(got - want).max())


@pytest.mark.parametrize("heads,kv_heads,block,mode", [(4, 2, 4, "block"), (8, 1, 8, "block"),
                                                       (4, 2, 4, "causal"), (8, 1, 8, "causal")])
def test_cache_call_matches_xla(heads, kv_heads, block, mode):
  """Rows early and late in a cache whose length is not a key-tile multiple; the late row has pad tokens."""
  s = 5 * block + 3
  q, k, v = _qkv(2, block, heads, kv_heads, s)
  valid = [[True] * block, [True] * (block - 2) + [False] * 2]
  q_tok = _call_tokens([block, 4 * block], block, valid)
  k_tok = masks.cache_tokens(q_tok, s)
  assert _max_diff(q, k, v, q_tok, k_tok, mode, block, key_tile=8) <= 1e-5


def test_read_only_call_keys_first_matches_xla():
  """A denoising call's keys are its own block followed by the cache (masks.call_then_cache_tokens)."""
  block, s = 4, 30
  q, k, v = _qkv(2, block, 8, 2, s + block, seed=2)
  q_tok = _call_tokens([block, 5 * block], block, [[True] * block, [True] * (block - 1) + [False]])
  k_tok = masks.call_then_cache_tokens(q_tok, s)
  assert _max_diff(q, k, v, q_tok, k_tok, "block", block, key_tile=8) <= 1e-5
  # 4 own keys + filled slots 0..3 (row 0) or 0..19 (row 1): 1 and 3 of the 5 key tiles are read
  assert pa.visible_tiles(q_tok, k_tok, "block", block, 8).tolist() == [1, 3]


def test_fused_two_block_call_matches_xla():
  """t = 2 blocks (commit of one block + first denoise of the next), block mode, several row tiles."""
  block, s = 4, 30
  q, k, v = _qkv(2, 2 * block, 8, 2, s, seed=1)
  q_tok = _call_tokens([0, 3 * block], 2 * block)
  k_tok = masks.cache_tokens(q_tok, s)
  assert _max_diff(q, k, v, q_tok, k_tok, "block", block, key_tile=8, row_tile=16) <= 1e-5


def test_training_layout_with_noisy_tokens_matches_xla():
  """The mask is `masks.allowed` from per-token vectors, so even the [noisy | clean] layout is exact."""
  block, n = 4, 8
  positions = jnp.tile(jnp.arange(n), (2, 2))
  noisy = jnp.tile(jnp.arange(2 * n) < n, (2, 1))
  valid = jnp.stack([jnp.ones(2 * n, bool), jnp.tile(jnp.arange(n) < 6, 2)])
  tok = masks.make_tokens(positions, valid, noisy)
  q, k, v = _qkv(2, 2 * n, 4, 2, 2 * n, seed=2)
  assert _max_diff(q, k, v, tok, tok, "block", block, key_tile=8) <= 1e-5


def test_rows_seeing_no_key_are_zero():
  q, k, v = _qkv(1, 4, 4, 2, 16, seed=3)
  q_tok = _call_tokens([4], 4)
  k_tok = masks.make_tokens(jnp.arange(16)[None], jnp.zeros((1, 16), bool))
  out = pa.pallas_attend(q, k, v, q_tok, k_tok, "block", 4, key_tile=8)
  assert np.array_equal(np.asarray(out), np.zeros(out.shape))


def test_visible_tiles_stop_at_the_query_block():
  """An early row reads only the tiles up to its block's end; the late row reads more; pad slots don't count."""
  q_tok = _call_tokens([4, 40], 4, [[True] * 4, [True, True, False, False]])
  k_tok = masks.cache_tokens(q_tok, 64)
  assert pa.visible_tiles(q_tok, k_tok, "block", 4, 8).tolist() == [1, 6]
  assert pa.visible_tiles(q_tok, k_tok, "causal", None, 8).tolist() == [1, 6]
  q_tok = _call_tokens([8, 8], 2)  # a call holding only the first half of block [8, 16)
  k_tok = masks.make_tokens(jnp.broadcast_to(jnp.arange(64), (2, 64)))  # all slots valid
  assert pa.visible_tiles(q_tok, k_tok, "block", 8, 8).tolist() == [2, 2]
  assert pa.visible_tiles(q_tok, k_tok, "causal", None, 8).tolist() == [2, 2]


def test_falls_back_to_xla_where_the_kernel_does_not_apply():
  q, k, v = _qkv(1, 4, 4, 2, 12, d=12, seed=4)  # head_dim 12 is not a power of two
  q_tok = _call_tokens([4], 4)
  k_tok = masks.cache_tokens(q_tok, 12)
  want = attention.attend(q, k, v, q_tok, k_tok, "block", 4)
  assert np.array_equal(np.asarray(pa.pallas_attend(q, k, v, q_tok, k_tok, "block", 4)), np.asarray(want))


def test_registered_and_selection(monkeypatch):
  assert attention.BACKENDS["pallas"] is pa.pallas_attend
  assert pa.choose_backend(lambda: jnp.zeros(()), lambda: jnp.zeros(())) == "xla"  # CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

  def broken():
    raise RuntimeError("does not lower")

  def slow():
    time.sleep(0.01)
    return jnp.zeros(())

  assert pa.choose_backend(slow, broken) == "xla"
  assert pa.choose_backend(slow, lambda: jnp.zeros(())) == "pallas"
  assert pa.choose_backend(lambda: jnp.zeros(()), slow) == "xla"


@pytest.mark.parametrize("mode", ["block", "causal"])
def test_kernel_lowers_to_triton(mode):
  """bf16, head_dim 128, 32-query blocks with G = 4: the kernel lowers to a Triton call for CUDA (not compiled)."""
  q, k, v = _qkv(2, 32, 16, 4, 256, d=128, dtype=jnp.bfloat16)
  q_tok = _call_tokens([32, 128], 32)
  call = functools.partial(pa._kernel_call, mode=mode, block_size=32, interpret=False, key_tile=64, row_tile=64)
  text = jax.jit(call).trace(q, k, v, q_tok, masks.cache_tokens(q_tok, 256)).lower(
      lowering_platforms=("cuda",)).as_text()
  assert "__gpu$xla.gpu.triton" in text


def test_forward_with_pallas_backend_matches_xla(monkeypatch):
  """Tiny random model: prefill then two block decode calls, rows with different prompt lengths."""
  monkeypatch.setitem(attention.BACKENDS, "pallas", functools.partial(pa.pallas_attend, key_tile=8))
  cfg = tiny_config()
  params = init_params(cfg, jax.random.PRNGKey(0), std=0.2)
  bs = cfg.block_size
  tokens = jnp.asarray(np.random.default_rng(5).integers(4, cfg.vocab_size, (2, 4 * bs)))
  prefill_valid = jnp.asarray([[True] * bs + [False] * bs, [True] * 2 * bs])  # prompts of one and two blocks
  calls = [(jnp.broadcast_to(jnp.arange(2 * bs), (2, 2 * bs)), prefill_valid)]
  calls += [(jnp.asarray([[bs], [2 * bs]]) + i * bs + jnp.arange(bs), None) for i in range(2)]  # own next blocks
  outs = {}
  for impl in ("xla", "pallas"):
    cache, outs[impl] = engine.init_cache(cfg, 2, 4 * bs), []
    for i, (pos, valid) in enumerate(calls):
      prefix = engine._as_pages(cache, pos[:, 0], bs) if i else None
      h, kv = forward(params, cfg, jnp.take_along_axis(tokens, pos, axis=1), pos, valid=valid, prefix=prefix,
                      attn_impl=impl, return_kv=True)
      cache = engine._write(cache, kv, pos[:, 0])
      outs[impl].append(np.asarray(h))
  for want, got in zip(outs["xla"], outs["pallas"]):
    assert np.abs(got - want).max() <= 1e-5
