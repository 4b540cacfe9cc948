"""The rollout engine's programs for the plan: the one place that knows which engine the trainer runs.

`rollout_knob` is the registry entry: the setting the search may lower (`rollout.batch_size`, the engine's slots)
and a builder of the engine's programs for any value of it: the once-per-step reshard of the policy into the rollout
layout (bf16, replicated over the data axes, split over tensor) and the engine call (`decode/programs.py`), compiled
for the widest page-table bucket (every slot full), with its slots and KV pages split over the mesh's data axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lrl_jax import config_parts, defaults
from lrl_jax.decode import api, programs as engine_programs
from lrl_jax.model import attention
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.plan.programs import Knob, Program, Setup


def rollout_knob(s: Setup) -> Knob:
  """The rollout programs of the trainer's engine and the setting that sizes them (a multiple of the shards)."""
  shards = engine_programs.shards(s.mesh)
  return Knob("rollout.batch_size", s.config.rollout.batch_size, shards, lambda slots: engine_programs_for(s, slots))


def engine_shape(s: Setup, slots: int, dcfg=None):
  r = s.config.rollout
  dcfg = dcfg or s.dcfg
  prompt = r.max_prompt_len or s.prompt_len
  return api.engine_shape(s.cfg, dcfg, slots, prompt + dcfg.max_new_tokens, r.pool_tokens or None,
                          r.page_size or None, r.fuse_commit, shards=engine_programs.shards(s.mesh))


def _engine(s: Setup, name: str, slots: int, dcfg, calls, loop_trips=()) -> Program:
  """One engine call at `slots` slots for the widest page-table bucket, its slots and pool fresh (donated)."""
  dcfg = dcfg.for_platform(attention.platform_of(s.mesh.devices.flat)).compiled()  # the target's paged kernel
  dtype = jnp.dtype(dcfg.dtype)
  shape = engine_shape(s, slots, dcfg)
  prog = engine_programs.for_mesh(s.mesh, engine_programs.kv_split(s.cfg, s.mesh))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), s.state["params"])
  return Program(name, prog.run, engine_programs.abstract_run_args(s.cfg, shapes, shape, dtype, s.mesh),
                 {"cfg": s.cfg, "dcfg": dcfg, "shape": shape, "bucket": shape.max_pages}, calls, None, loop_trips)


def engine_programs_for(s: Setup, slots: int) -> list[Program]:
  """Reshard + engine call at `slots` slots. FLOPs assume responses of `s.lengths` (default: every one runs to
  max_new_tokens, an upper bound) at `s.tpf` tokens per denoising forward, one commit per block, prompts prefilled
  one block per forward, every slot busy (the tail left out), and the XLA page walk (its trips depend on the
  lengths held) over the whole page-table bucket."""
  dcfg = s.dcfg
  r = s.config.rollout
  sequences = r.num_prompts * r.num_responses
  prefill = s.prompt_len // dcfg.block_size
  per_sequence = prefill + s.blocks_per_response() * (min(dcfg.num_steps, dcfg.block_size / s.tpf) + 1)
  forwards = math.ceil(sequences * per_sequence / slots)  # continuous batching keeps every slot busy
  calls = -(-forwards // r.forwards_per_call)
  dtype = jnp.dtype(dcfg.dtype)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), s.state["params"])
  reshard = mesh_lib.to_rollout(s.cfg, shapes, s.mesh, dtype)
  shape = engine_shape(s, slots)
  return [
      Program("rollout/reshard", reshard, (s.state["params"],), {}, 1),
      _engine(s, "rollout/engine", slots, dcfg, calls,
              (r.forwards_per_call, shape.max_pages // min(shape.prefix_chunk, shape.max_pages))),
  ]


def eval_programs(s: Setup) -> list[Program]:
  """The trainer's eval engine: greedy, `eval.batch_size` slots, one program for every threshold (θ is a runtime
  argument). Not part of a step's FLOPs (calls unknown: it runs every `train.eval_every` steps)."""
  stops = defaults.parse_stop_ids(s.config.rollout.stop_ids) or ()
  dcfg = config_parts.decode_config(s.config, stops, greedy=True)
  return [_engine(s, "eval/engine", s.config.eval.batch_size, dcfg, None)]
