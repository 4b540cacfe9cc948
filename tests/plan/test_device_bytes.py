"""plan's per-device byte count handles the engine's PRNG-key outputs (key<fry> slots.key crashed the plan)."""

import jax
import jax.numpy as jnp

from lrl_jax.plan.programs import device_bytes


def test_device_bytes_counts_prng_keys_as_their_key_data():
  keys = jax.random.split(jax.random.key(0), 5)
  tree = {"key": jax.ShapeDtypeStruct(keys.shape, keys.dtype), "x": jax.ShapeDtypeStruct((3, 4), jnp.bfloat16)}
  assert device_bytes(tree) == jax.random.key_data(keys).nbytes + 3 * 4 * 2  # 5 x 2 uint32 + 12 bf16
