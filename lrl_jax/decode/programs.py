"""The rollout engine's compiled programs over a mesh: each shard of the data axes runs its own slots and pages.

Every program is `jax.shard_map` over the mesh's data axes (`data`, `fsdp`, `expert`) with the `tensor` axis left
automatic: slots, pages and free stacks are split over the data axes, params are replicated over them (the rollout
layout, `parallel.mesh.rollout_shardings`), so a denoising forward runs no collective but the tensor-parallel ones;
MoE experts stay split over `expert`, and the shards of an expert group exchange tokens (`model/moe_dispatch.py`).
The host addresses slots by global index (shard * slots + local); each shard acts on its own rows and ignores the
others. On one device the mesh is 1 x 1 x 1 and the same programs run unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from lrl_jax.decode import engine, slots as slots_lib
from lrl_jax.model.config import ModelConfig
from lrl_jax.parallel import mesh as mesh_lib

DATA = mesh_lib.BATCH


def default_mesh():
  """A one-device mesh with the (data, fsdp, tensor) axes."""
  return mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])


def shards(mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["expert"]


SLOTS = slots_lib.Slots(*([P(DATA)] * len(slots_lib.Slots._fields)))
POOL = slots_lib.Pool(P(None, DATA), P(None, DATA), P(DATA), P(DATA))
STATS = engine.Stats(*([P(DATA)] * len(engine.Stats._fields)))


def _shard_map(fn, mesh, in_specs, out_specs):
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, axis_names=set(DATA), check_vma=False)


def _local_rows(rows, slots_per_shard: int):
  """Global slot ids [R] → this shard's local ids; rows of other shards become out-of-range (slots_per_shard)."""
  local = rows - jax.lax.axis_index(DATA) * slots_per_shard
  return jnp.where((local >= 0) & (local < slots_per_shard), local, slots_per_shard)


def _param_specs(cfg: ModelConfig, params, mesh):
  """The params' specs over the data axes: their rollout layout's split over them (MoE experts over `expert`, the
  MoE block dispatches tokens to them: `model/moe_dispatch.py`), replicated otherwise."""
  data = lambda entry: tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ()) if a in DATA) or None
  return jax.tree.map(lambda s: P(*map(data, s.spec)), mesh_lib.rollout_shardings(cfg, params, mesh))


def kv_split(cfg: ModelConfig, mesh) -> bool:
  """Whether KV pages keep their kv heads split over `tensor` (as the tensor-parallel attention computes them)."""
  return mesh.shape["tensor"] > 1 and cfg.num_kv_heads % mesh.shape["tensor"] == 0


def init_state(cfg: ModelConfig, shape: slots_lib.EngineShape, dtype, mesh):
  """Empty slots and a full free stack per shard, placed shard by shard on the mesh."""
  return _init_program(cfg, shape, jnp.dtype(dtype), mesh)()


def abstract_run_args(cfg: ModelConfig, param_shapes, shape: slots_lib.EngineShape, dtype, mesh) -> tuple:
  """`for_mesh(...).run`'s positional arguments as ShapeDtypeStructs, for lowering it without devices or weights:
  the params [shapes of `param_shapes`] at `dtype` in the rollout layout, fresh slots and pool, the three scalars
  (max_forwards int32, queued bool, threshold float32)."""
  prog = for_mesh(mesh, kv_split(cfg, mesh))
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, dtype, sharding=s), param_shapes,
                        mesh_lib.rollout_shardings(cfg, param_shapes, mesh))
  state = jax.eval_shape(lambda: init_state(cfg, shape, dtype, mesh))
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, (prog.slots, prog.pool))
  scalar = lambda dt: jax.ShapeDtypeStruct((), dt)
  return (params, *state, scalar(jnp.int32), scalar(jnp.bool_), scalar(jnp.float32))


@functools.lru_cache(maxsize=None)
def _init_program(cfg: ModelConfig, shape: slots_lib.EngineShape, dtype, mesh):
  """The jitted allocation of an engine's state, compiled once per (model, shape, dtype, mesh): the scheduler
  allocates the state afresh for every run and frees it after."""
  p = for_mesh(mesh, kv_split(cfg, mesh))
  make = lambda: (slots_lib.init_slots(shape), slots_lib.init_pool(cfg, shape, dtype))
  return jax.jit(make, out_shardings=(p.slots, p.pool))


class Programs(NamedTuple):
  """The engine's jitted programs for one mesh, with the canonical output placement of its state."""
  slots: slots_lib.Slots  # NamedShardings
  pool: slots_lib.Pool
  run: Any
  admit: Any
  release: Any
  read_rows: Any


@functools.lru_cache(maxsize=None)
def for_mesh(mesh, kv_tensor: bool = False) -> Programs:
  """Build (once per mesh) the programs; each output is placed exactly like the state it replaces, so the same
  compiled program serves every call. `kv_tensor`: pages keep kv heads split over `tensor` (`kv_split`), so the
  pool is never gathered."""
  named = lambda tree: jax.tree.map(lambda s: NamedSharding(mesh, s), tree)
  kv = P(None, DATA, None, "tensor") if kv_tensor else P(None, DATA)
  slots_s, pool_s, stats_s = named(SLOTS), named(POOL._replace(k=kv, v=kv)), named(STATS)
  rows_s = named(slots_lib.Rows(*([P()] * len(slots_lib.Rows._fields))))

  def run(params, slots, pool, max_forwards, queued, threshold, *, cfg, dcfg, shape, bucket):
    """`engine.run` on every shard; Stats come back per shard ([shards] each)."""
    def local(params, slots, pool, max_forwards, queued, threshold):
      slots, pool, st = engine.run(params, slots, pool, max_forwards, queued, threshold, cfg=cfg, dcfg=dcfg,
                                   shape=shape, bucket=bucket)
      return slots, pool, jax.tree.map(lambda x: x[None], st)

    return _shard_map(local, mesh, (_param_specs(cfg, params, mesh), SLOTS, POOL, P(), P(), P()),
                      (SLOTS, POOL, STATS))(params, slots, pool, max_forwards, queued, threshold)

  def admit(slots, rows, tokens, prompt_len, end, keys, *, shape, block_size, mask_id):
    """Start sequences in global slots `rows` [R] (ids >= total slots are padding)."""
    def local(slots, rows, tokens, prompt_len, end, keys):
      return slots_lib.admit(slots, _local_rows(rows, shape.slots), tokens, prompt_len, end, keys,
                             block_size=block_size, mask_id=mask_id)

    return _shard_map(local, mesh, (SLOTS, P(), P(), P(), P(), P()), SLOTS)(slots, rows, tokens, prompt_len, end,
                                                                             keys)

  def release(slots, pool, which):
    """Empty the slots `which` [total slots] bool; their pages return to their shard's pool."""
    return _shard_map(slots_lib.release, mesh, (SLOTS, POOL, P(DATA)), (SLOTS, POOL))(slots, pool, which)

  def read_rows(slots, rows, *, shape):
    """Rows of global slots `rows` [R], the same on every device (each shard contributes its own rows)."""
    def local(slots, rows):
      part = slots_lib.read_rows(slots, _local_rows(rows, shape.slots))
      return jax.tree.map(lambda x: jax.lax.psum(x, DATA), part)

    return _shard_map(local, mesh, (SLOTS, P()), slots_lib.Rows(*([P()] * len(slots_lib.Rows._fields))))(slots, rows)

  return Programs(
      slots_s, pool_s,
      jax.jit(run, static_argnames=("cfg", "dcfg", "shape", "bucket"), donate_argnames=("slots", "pool"),
              out_shardings=(slots_s, pool_s, stats_s)),
      jax.jit(admit, static_argnames=("shape", "block_size", "mask_id"), donate_argnames=("slots",),
              out_shardings=slots_s),
      jax.jit(release, donate_argnames=("slots", "pool"), out_shardings=(slots_s, pool_s)),
      jax.jit(read_rows, static_argnames=("shape",), out_shardings=rows_s))
