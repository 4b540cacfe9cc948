"""configs/lightningrl.py at SDAR-8B shape: the rollout engine's buffers are sized by settings and fit one 80 GB
device beside the bf16 policy (jax.eval_shape: nothing allocated). The deviceless 8xH100 compile is `plan`'s."""

import dataclasses

import jax
import jax.numpy as jnp

from lrl_jax.bench import shapes
from lrl_jax.decode import DecodeConfig, api, slots
from lrl_jax.model import init_params
from tests.run.util import load


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_paper_rollout_buffers_fit_one_h100_beside_the_policy():
  config = load("lightningrl")
  r = config.rollout
  cfg = shapes.preset_config("sdar-8b", r.block_size)
  dcfg = DecodeConfig(block_size=r.block_size, max_new_tokens=r.max_new_tokens, dtype="bfloat16")
  shards = 8  # fsdp=8 on one 8xH100 host: each device decodes batch_size / 8 slots with its own pool
  shape = api.engine_shape(cfg, dcfg, r.batch_size, 256 + r.max_new_tokens, r.pool_tokens or None,
                           r.page_size or None, r.fuse_commit, shards=shards)
  one_shard = dataclasses.replace(shape, shards=1)
  state = jax.eval_shape(lambda: (slots.init_slots(one_shard), slots.init_pool(cfg, one_shard, jnp.bfloat16)))
  policy = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), jnp.bfloat16))
  kv_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2
  assert one_shard.slots == r.batch_size // shards
  assert _bytes((state[1].k, state[1].v)) == one_shard.pages * one_shard.page_size * kv_token  # the pool is the setting, no more
  assert one_shard.pages * one_shard.page_size <= one_shard.slots * (one_shard.max_len + one_shard.page_size)
  total = _bytes(state) + _bytes(policy)
  assert total < 80e9, f"{total / 2**30:.1f} GiB per device"
