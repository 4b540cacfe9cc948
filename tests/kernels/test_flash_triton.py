"""The Triton training flash kernels (forward and backward) in interpret mode against the XLA flash path: fp32 1e-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.kernels import flash_triton
from lrl_jax.kernels.flash_xla import attend as flash_attend
from tests.kernels.test_flash_xla import TOL, qkv, sees_a_key, training_layout
from tests.optional import needs_cuda_plugin


@pytest.mark.parametrize("mode", ["block", "causal"])
def test_pallas_flash_matches_xla_flash_values_and_gradients(mode):
  tok = training_layout(seed=4)
  q, k, v, cot = qkv(tok, dim=16)
  seen = jnp.asarray(sees_a_key(tok, mode, 4))[..., None, None]
  xla = lambda q, k, v: flash_attend(q, k, v, tok, tok, mode, 4, 16)
  kernel = lambda q, k, v: flash_triton.attend(q, k, v, tok, tok, mode, 4, interpret=True, q_tile=16, k_tile=16)
  out_x, out_k = xla(q, k, v), jax.jit(kernel)(q, k, v)
  assert q.shape[1] % 16  # the kernels pad the layout to whole tiles
  assert np.abs(np.asarray(out_x - out_k)).max() <= TOL
  loss = lambda fn: lambda *a: jnp.sum(jnp.where(seen, fn(*a) * cot, 0.0))
  g_x = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
  g_k = jax.jit(jax.grad(loss(kernel), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_x, g_k):
    assert float(jnp.abs(a - b).max()) <= TOL * max(1.0, float(jnp.abs(a).max()))


@needs_cuda_plugin
def test_pallas_flash_compiles_for_h100_deviceless():
  """Forward and backward lower through Triton for an H100 target from this CPU host, picked by the mesh platform."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from lrl_jax.kernels import masks
  from lrl_jax.model import attention
  from lrl_jax.parallel import mesh as mesh_lib
  from lrl_jax.plan import targets

  topo = targets.topology(targets.parse_target("h100x2"))
  mesh = mesh_lib.make_mesh(1, 2, 1, devices=topo.devices)
  assert attention.training_backend(topo.devices) == "pallas_flash"
  b, t, h, kh, d = 4, 256, 4, 2, 128
  row = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=NamedSharding(mesh, P("fsdp")))

  def loss(q, k, v, pos, noisy, valid):
    tok = masks.Tokens(pos, noisy, valid)
    return attention.backend("pallas_flash")(q, k, v, tok, tok, "block", 32, None).astype(jnp.float32).sum()

  with mesh_lib.activate(mesh):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(
        row((b, t, h, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16), row((b, t, kh, d), jnp.bfloat16),
        row((b, t), jnp.int32), row((b, t), bool), row((b, t), bool)).compile()
  text = compiled.as_text()
  assert all(name in text for name in ("train_flash_fwd", "train_flash_dkdv", "train_flash_dq"))
  assert "all-gather" not in text  # the kernels run per batch shard (shard_map), inputs are never gathered
