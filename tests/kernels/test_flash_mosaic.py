"""The Mosaic training flash kernels (forward and backward) in interpret mode against dense XLA attention (fp32,
1e-5), their tile table and mask rule, and a deviceless forward+backward compile for a TPU topology."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from lrl_jax.kernels import dense_xla, flash_mosaic, masks
from lrl_jax.kernels.masks import pad_tokens
from lrl_jax.model import attention
from tests.kernels.test_flash_xla import TOL, qkv, sees_a_key, training_layout
from tests.optional import needs_libtpu

BLOCK = 4


@pytest.mark.parametrize("mode,interpret,tiles", [
    ("block", pltpu.InterpretParams(random_seed=0), (16, 16)),  # TPU semantics: DMAs, NaN-filled new buffers, shuffled
    ("causal", True, (16, 8)),                                  # parallel grid axes
])
def test_values_and_gradients_match_dense_attention(mode, interpret, tiles):
  tok = training_layout(seed=4)
  noisy_starts = {int(p[n][0]) for p, n in zip(np.asarray(tok.positions), np.asarray(tok.noisy)) if n.any()}
  assert len(noisy_starts) > 1  # the rows' noisy windows start at different blocks
  q, k, v, cot = qkv(tok, heads=4, kv_heads=2, dim=16)
  assert q.shape[1] % 16 and q.shape[1] % 8  # padded to whole tiles inside
  seen = jnp.asarray(sees_a_key(tok, mode, BLOCK))[..., None, None]
  assert not bool(seen.all())  # a padding row and padded positions see no key: the kernel gives them zeros
  cot = jnp.where(seen, cot, 0.0)  # what is never read gets no cotangent

  def out_and_grads(fn):
    out, pull = jax.vjp(fn, q, k, v)
    return out, pull(cot)

  out_d, g_d = out_and_grads(lambda q, k, v: dense_xla.attend(q, k, v, tok, tok, mode, BLOCK))
  out_k, g_k = jax.jit(lambda: out_and_grads(lambda q, k, v: flash_mosaic.attend(
      q, k, v, tok, tok, mode, BLOCK, interpret=interpret, q_tile=tiles[0], k_tile=tiles[1])))()
  assert np.abs(np.where(seen, out_d - out_k, 0.0)).max() <= TOL
  assert np.abs(np.where(seen, 0.0, out_k)).max() == 0.0
  for a, b in zip(g_d, g_k):
    assert 0.1 < float(jnp.abs(a).max()) <= 10.0  # gradients of order one: the bound below is close to absolute
    assert float(jnp.abs(a - b).max()) <= TOL * max(1.0, float(jnp.abs(a).max()))


@pytest.mark.parametrize("mode", ["block", "causal"])
def test_kernel_mask_rule_equals_masks_allowed(mode):
  """`_allowed` on codes (either tile orientation) is `masks.allowed` on the tokens they encode."""
  rng = np.random.default_rng(0)
  n = 64
  tok = masks.make_tokens(jnp.asarray(rng.integers(0, 24, (1, n))), jnp.asarray(rng.random((1, n)) < 0.8),
                          jnp.asarray(rng.random((1, n)) < 0.5))
  want = np.asarray(masks.allowed(tok, tok, mode, BLOCK)[0])
  code = flash_mosaic._codes(tok, mode, BLOCK)[0]  # [1, n]
  assert 0 < want.sum() < want.size
  np.testing.assert_array_equal(np.asarray(flash_mosaic._allowed(code.T, code, mode)), want)
  np.testing.assert_array_equal(np.asarray(flash_mosaic._allowed(code, code.T, mode)), want.T)
  np.testing.assert_array_equal(np.asarray(flash_mosaic._col(code)), np.asarray(code.T))
  np.testing.assert_array_equal(np.asarray(flash_mosaic._row(code.T)), np.asarray(code))


def test_tile_table_skips_empty_tiles_and_their_loads():
  tok = pad_tokens(training_layout(seed=4, length=40), 80)
  tq = tk = 8
  state = np.asarray(flash_mosaic.tile_states(tok, tok, "block", BLOCK, tq, tk))  # [b, 10, 10]
  allow = np.asarray(masks.allowed(tok, tok, "block", BLOCK)).reshape(3, 10, tq, 10, tk)
  want = np.where(allow.all((2, 4)), flash_mosaic.FULL, allow.any((2, 4)).astype(int))
  np.testing.assert_array_equal(state, want)
  assert {flash_mosaic.EMPTY, flash_mosaic.PARTIAL, flash_mosaic.FULL} <= set(state.ravel().tolist())
  assert (state == flash_mosaic.EMPTY).mean() > 0.4
  table = np.asarray(flash_mosaic._with_fetch(jnp.asarray(state)))
  np.testing.assert_array_equal(table & 3, state)
  fetch, live = table >> 2, state > flash_mosaic.EMPTY
  j = np.broadcast_to(np.arange(10), state.shape)
  np.testing.assert_array_equal(fetch[live], j[live])  # live tiles load their own key tile
  for r in range(3):  # along the grid's (query tile, key tile) steps a new key tile is loaded only for a live step:
    order, alive = fetch[r].ravel(), live[r].ravel()  # the next one (prefetch), with no other load in between
    for c in np.flatnonzero(order[1:] != order[:-1]) + 1:
      user = c + int(np.argmax(alive[c:]))
      assert alive[user] and order[c] == user % 10 and (order[c:user + 1] == order[c]).all()


@needs_libtpu
def test_forward_and_backward_compile_for_tpu_deviceless(v5e_devices):
  """TPU meshes pick this kernel; fwd+bwd at d 128, bf16, 2048 positions, default tiles, 4 chips, lower to Mosaic."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from lrl_jax.parallel import mesh as mesh_lib

  mesh = mesh_lib.make_mesh(1, 4, 1, devices=v5e_devices)
  impl = attention.training_backend(v5e_devices)
  assert impl == "pallas_tpu_flash"
  b, t, h, kh, d = 8, 2048, 4, 2, 128
  row = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, P("fsdp")))

  def loss(q, k, v, pos, noisy, valid):
    tok = masks.Tokens(pos, noisy, valid)
    return attention.backend(impl)(q, k, v, tok, tok, "block", BLOCK, None).astype(jnp.float32).sum()

  with mesh_lib.activate(mesh):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
        row((b, t, h, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16),
        row((b, t), jnp.int32), row((b, t), bool), row((b, t), bool)).compile()
  text = compiled.as_text()
  assert text.count("custom_call_target=\"tpu_custom_call\"") == 3
  assert all(name in text for name in ("tpu_flash_fwd", "tpu_flash_dkdv", "tpu_flash_dq"))
  assert "all-gather" not in text  # per batch shard (shard_map): inputs are never gathered
