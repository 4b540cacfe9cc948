"""One Mesh (data, fsdp, expert, tensor) from config, logical-axis rules, and shardings of params, optimizer state,
batches.

The model names axes only (Flax logical partitioning); `activate` applies these rules and a mesh through Flax's
logical-rules machinery. A logical axis whose size a mesh axis does not divide stays unsharded on that axis, so tiny
models and odd vocabularies still run on any mesh; the same code runs on one device with every axis of size 1.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lrl_jax.model.moe_dispatch import fit_spec
from lrl_jax.model.params import param_axes
from lrl_jax.model.config import ModelConfig

AXES = ("data", "fsdp", "expert", "tensor")
# Rows are split over every axis but tensor: the expert axis is data-parallel outside the MoE blocks (expert
# parallelism), and its devices each hold 1/expert of every MoE layer's experts.
BATCH = ("data", "fsdp", "expert")

RULES = (
    ("batch", BATCH),
    ("expert", "expert"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("head_dim", None),
    ("seq", None),
)

# The rollout layout: weights whole on every data shard (split over `tensor` only, and MoE experts over `fsdp` and
# `expert`: model/moe_dispatch.py sends tokens to them), so each shard decodes its own slots with no collective
# inside a forward but the tensor- and expert-parallel ones.
ROLLOUT_RULES = tuple((name, {"embed": None, "expert": ("fsdp", "expert")}.get(name, target)) for name, target in RULES)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None, expert: int = 1) -> Mesh:
  """Mesh over all devices; one axis may be -1 (= the devices left over)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = [data, fsdp, expert, tensor]
  known = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1 or len(devices) % known:
    raise ValueError(f"mesh (data={data}, fsdp={fsdp}, expert={expert}, tensor={tensor}) does not fit "
                     f"{len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), AXES)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=RULES) -> Iterator[None]:
  """Within this context (and while tracing under it) the model's logical constraints shard activations on mesh."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def fitted_spec(shape, names, mesh: Mesh, rules=RULES) -> PartitionSpec:
  """PartitionSpec of logical names, dropping mesh axes that do not divide the dimension."""
  return fit_spec(shape, nn.logical_to_mesh_axes(names, rules), dict(mesh.shape))


def param_shardings(cfg: ModelConfig, params_shape, mesh: Mesh, rules=RULES):
  """NamedSharding of every parameter from its logical axes."""
  axes = param_axes(cfg)
  return jax.tree.map(lambda names, x: NamedSharding(mesh, fitted_spec(x.shape, names, mesh, rules)), axes,
                      params_shape, is_leaf=lambda a: isinstance(a, tuple))


def rollout_shardings(cfg: ModelConfig, params_shape, mesh: Mesh):
  """NamedSharding of every parameter in the rollout layout (replicated over data and fsdp, split over tensor;
  MoE experts split over fsdp and expert)."""
  return param_shardings(cfg, params_shape, mesh, ROLLOUT_RULES)


def to_rollout(cfg: ModelConfig, params_shape, mesh: Mesh, dtype):
  """A jitted reshard of params from the training layout to the rollout layout, cast to `dtype` in the same pass."""
  return jax.jit(lambda p: jax.tree.map(lambda x: x.astype(dtype), p),
                 out_shardings=rollout_shardings(cfg, params_shape, mesh))


def opt_state_shardings(optimizer: optax.GradientTransformation, params_shape, p_shardings, mesh: Mesh):
  """Optimizer state shaped like the params (Adam moments) shares their shardings; scalars are replicated."""
  state_shape = jax.eval_shape(optimizer.init, params_shape)
  replicated = NamedSharding(mesh, PartitionSpec())
  return optax.tree_map_params(optimizer, lambda _, s: s, state_shape, p_shardings,
                               transform_non_params=lambda _: replicated)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows over (data, fsdp, expert); other dims replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH, *([None] * (ndim - 1))))

