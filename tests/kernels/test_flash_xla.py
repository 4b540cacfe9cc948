"""Key-chunked flash attention (XLA, custom VJP) against dense attention: fp32, 1e-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.kernels import dense_xla, masks
from lrl_jax.kernels.flash_xla import attend as flash_attend
from lrl_jax.model import attention
from lrl_jax.rl import layout
from tests.optional import needs_libtpu

TOL = 1e-5


def training_layout(seed=0, rows=3, length=24, block=4, start=4):
  """Token metadata of a [noisy window | clean] batch: mixed prompt/response lengths and one padding row."""
  rng = np.random.default_rng(seed)
  noisy_masked = np.zeros((rows, length), bool)
  valid = np.zeros((rows, length), bool)
  for r in range(rows - 1):
    prompt, end = int(rng.integers(3, 9)), int(rng.integers(12, length + 1))
    valid[r, :end] = True
    noisy_masked[r, prompt:end] = rng.random(end - prompt) < 0.7
    noisy_masked[r, prompt] = True
  tokens = jnp.asarray(rng.integers(0, 50, (rows, length)))
  _, pos, noisy, both_valid, _ = layout.noisy_clean_inputs(tokens, jnp.asarray(noisy_masked), jnp.asarray(valid), 99,
                                                           block, start)
  return masks.make_tokens(pos, both_valid, noisy)


def qkv(tok, heads=4, kv_heads=2, dim=8, seed=1, dtype=jnp.float32):
  b, t = tok.positions.shape
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (b, t, heads, dim), dtype)
  k = jax.random.normal(ks[1], (b, t, kv_heads, dim), dtype)
  v = jax.random.normal(ks[2], (b, t, kv_heads, dim), dtype)
  return q, k, v, jax.random.normal(ks[3], (b, t, heads, dim), dtype)


def sees_a_key(tok, mode, block):
  return np.asarray(masks.allowed(tok, tok, mode, block).any(-1))  # [b, t]


@pytest.mark.parametrize("mode,q_chunk,k_chunk", [("block", 8, 8), ("block", 5, 7), ("block", None, 16),
                                                  ("causal", 6, 4)])
def test_flash_values_and_gradients_match_dense(mode, q_chunk, k_chunk):
  block = 4
  tok = training_layout()
  q, k, v, cot = qkv(tok)
  seen = jnp.asarray(sees_a_key(tok, mode, block))[..., None, None]
  assert not bool(seen.all())  # the padding row sees nothing: its outputs are unread, flash gives zeros there

  def loss(fn, q, k, v):
    return jnp.sum(jnp.where(seen, fn(q, k, v) * cot, 0.0))

  dense = lambda q, k, v: dense_xla.attend(q, k, v, tok, tok, mode, block)
  flash = lambda q, k, v: flash_attend(q, k, v, tok, tok, mode, block, q_chunk, k_chunk=k_chunk)
  out_d, out_f = dense(q, k, v), flash(q, k, v)
  assert np.abs(np.where(seen, out_d - out_f, 0.0)).max() <= TOL
  assert np.abs(np.where(seen, 0.0, out_f)).max() == 0.0
  g_d = jax.grad(lambda *a: loss(dense, *a), argnums=(0, 1, 2))(q, k, v)
  g_f = jax.jit(jax.grad(lambda *a: loss(flash, *a), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_d, g_f):
    assert float(jnp.abs(a - b).max()) <= TOL * max(1.0, float(jnp.abs(a).max()))


def test_flash_bfloat16_close_to_float32():
  tok = training_layout(seed=2)
  q, k, v, _ = qkv(tok)
  seen = sees_a_key(tok, "block", 4)
  f32 = flash_attend(q, k, v, tok, tok, "block", 4, 8)
  bf16 = flash_attend(*(x.astype(jnp.bfloat16) for x in (q, k, v)), tok, tok, "block", 4, 8)
  assert bf16.dtype == jnp.bfloat16
  assert np.abs(np.asarray(bf16.astype(jnp.float32) - f32))[seen].max() < 0.05


@needs_libtpu
def test_flash_compiles_for_tpu_deviceless(v5e_devices):
  """The XLA flash path (any backend's fallback; TPU meshes train with the Mosaic kernel) compiles for v5e from here."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from lrl_jax.parallel import mesh as mesh_lib

  mesh = mesh_lib.make_mesh(1, 4, 1, devices=v5e_devices)
  assert attention.training_backend(v5e_devices) == "pallas_tpu_flash"
  impl = "flash"
  b, t, h, kh, d = 4, 256, 4, 2, 128
  row = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, P("fsdp")))

  def loss(q, k, v, pos, noisy, valid):
    tok = masks.Tokens(pos, noisy, valid)
    return attention.backend(impl)(q, k, v, tok, tok, "block", 32, 128).astype(jnp.float32).sum()

  with mesh_lib.activate(mesh):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
        row((b, t, h, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16),
        row((b, t), jnp.int32), row((b, t), bool), row((b, t), bool)).compile()
  assert compiled.memory_analysis().temp_size_in_bytes < 64 << 20
