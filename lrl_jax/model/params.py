"""The params pytree of the model, read off the Flax module: shapes, logical axis names, random initialisation.

Layer weights are stacked on a leading `layers` axis (`nn.scan`); projections keep heads as their own axis
(`[embed, heads, head_dim]`) so a mesh can shard them. The tree's names map one-to-one to HF tensors (SPEC §2).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks
from lrl_jax.model.config import ModelConfig
from lrl_jax.model.layers import SDAR


def _init(cfg: ModelConfig, key: jax.Array, dtype, std: float) -> dict:
  """Boxed (logically partitioned) params of `SDAR.init` on a one-token causal call."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  model = SDAR(cfg, param_dtype=dtype, init_std=std, mode="causal")
  return model.init(key, tokens, masks.make_tokens(jnp.zeros((1, 1), jnp.int32)))["params"]


@functools.lru_cache(maxsize=32)
def _abstract(cfg: ModelConfig) -> dict:
  return jax.eval_shape(functools.partial(_init, cfg, dtype=jnp.float32, std=0.02), jax.random.key(0))


def param_shapes(cfg: ModelConfig) -> dict:
  """Shape of every parameter (a tuple), as the same nested dict the params use."""
  return jax.tree.map(lambda x: tuple(x.shape), nn.unbox(_abstract(cfg)))


def param_axes(cfg: ModelConfig) -> dict:
  """Logical axis names of every parameter (tuples), a pytree shaped like the params."""
  specs = nn.get_partition_spec(_abstract(cfg))
  return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> dict:
  """Random params (normal(0, std) weights, unit norms, zero biases), for tests and training from scratch."""
  return nn.unbox(_init(cfg, key, dtype, std))


def num_params(params: dict) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
