"""The rollout engine's programs for the plan: the one place that knows which engine the trainer runs.

`rollout_knob` is the registry entry: the setting the search may lower (`rollout.batch_size`, the engine's slots)
and a builder of the engine's programs for any value of it: the once-per-step reshard of the policy into the rollout
layout (bf16, replicated over the data axes, split over tensor) and the engine call (`decode/programs.py`), compiled
for the widest page-table bucket (every slot full), with its slots and KV pages split over the mesh's data axes.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from lrl_jax.decode import api, programs as engine_programs
from lrl_jax.model import attention
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.plan.programs import Knob, Program, Setup


def rollout_knob(s: Setup) -> Knob:
  """The rollout programs of the trainer's engine and the setting that sizes them (a multiple of the shards)."""
  shards = engine_programs.shards(s.mesh)
  return Knob("rollout.batch_size", s.config.rollout.batch_size, shards, lambda slots: engine_programs_for(s, slots))


def engine_shape(s: Setup, slots: int):
  r = s.config.rollout
  prompt = r.max_prompt_len or s.prompt_len
  return api.engine_shape(s.cfg, s.dcfg, slots, prompt + s.dcfg.max_new_tokens, r.pool_tokens or None,
                          r.page_size or None, r.fuse_commit, shards=engine_programs.shards(s.mesh))


def engine_programs_for(s: Setup, slots: int) -> list[Program]:
  """Reshard + engine call at `slots` slots. FLOPs assume every response runs to max_new_tokens at `s.tpf` tokens
  per denoising forward (an upper bound), one commit per block, prompts prefilled one block per forward, and the
  XLA page walk (its trips depend on the lengths held) over the whole page-table bucket."""
  cfg, dcfg = s.cfg, s.dcfg
  dcfg = dcfg.for_platform(attention.platform_of(s.mesh.devices.flat))  # the target's paged kernel (GPU, TPU)
  dtype = jnp.dtype(dcfg.dtype)
  shape = engine_shape(s, slots)
  prog = engine_programs.for_mesh(s.mesh, engine_programs.kv_split(cfg, s.mesh))
  f32 = s.state["params"]
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), f32)
  rollout_params = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, dtype, sharding=sh), f32,
                                mesh_lib.rollout_shardings(cfg, shapes, s.mesh))
  state = jax.eval_shape(lambda: engine_programs.init_state(cfg, shape, dtype, s.mesh))
  state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state, (prog.slots, prog.pool))
  scalar = lambda dt: jax.ShapeDtypeStruct((), dt)
  r = s.config.rollout
  sequences = r.num_prompts * r.num_responses
  blocks = -(-dcfg.max_new_tokens // dcfg.block_size)
  prefill = s.prompt_len // dcfg.block_size
  per_sequence = prefill + blocks * (min(dcfg.num_steps, dcfg.block_size / s.tpf) + 1)  # forwards of one sequence
  forwards = -(-sequences // slots) * per_sequence  # every slot of every shard runs in parallel
  calls = -(-forwards // r.forwards_per_call)
  reshard = mesh_lib.to_rollout(cfg, shapes, s.mesh, dtype)
  return [
      Program("rollout/reshard", reshard, (f32,), {}, 1, tuple(s.state)),
      Program("rollout/engine", prog.run,
              (rollout_params, *state, scalar(jnp.int32), scalar(jnp.bool_), scalar(jnp.float32)),
              {"cfg": cfg, "dcfg": dcfg, "shape": shape, "bucket": shape.max_pages}, calls, tuple(s.state), None,
              (r.forwards_per_call, shape.max_pages // min(shape.prefix_chunk, shape.max_pages))),
  ]
