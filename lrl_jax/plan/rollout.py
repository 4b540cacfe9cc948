"""The rollout engine's programs for the plan: the one place that knows which engine the trainer runs.

`rollout_knob` is the registry entry: it returns the knob the search may lower (here `rollout.batch_size`) and a
builder of the engine's programs for any value of it. Today it wraps `decode.engine.decode` (one program per
prompt bucket: a batch x max-length KV cache, decoded until every row stops). A new engine replaces the body of
`rollout_knob` with its own builder (slots / pages as the knob); the rest of the plan does not change.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from lrl_jax.decode import api, engine
from lrl_jax.plan.programs import Knob, Program, Setup


def rollout_knob(s: Setup) -> Knob:
  """The rollout programs of the trainer's engine and the setting that sizes them."""
  return Knob("rollout.batch_size", s.config.rollout.batch_size, 1, lambda batch: batch_decode_programs(s, batch))


def batch_decode_programs(s: Setup, batch: int) -> list[Program]:
  """`engine.decode` as `Decoder` calls it from the trainer: compute-dtype params sharded like the float32 ones
  (`Trainer.compute_params` casts leaf by leaf), host inputs and the fresh cache uncommitted, i.e. replicated.

  FLOPs assume every response runs to max_new_tokens (the loop runs until the last row of a batch stops) at
  `s.tpf` tokens per denoising forward.
  """
  cfg, dcfg = s.cfg, s.dcfg
  dtype = jnp.dtype(dcfg.dtype)
  if dcfg.attn_impl == "auto":  # the Decoder times both backends on a GPU; the plan compiles the XLA one
    dcfg = dataclasses.replace(dcfg, attn_impl="xla")
  replicated = NamedSharding(s.mesh, PartitionSpec())
  put = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), tree)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding), s.state["params"])
  bucket = api.prompt_bucket(s.prompt_len, dcfg.block_size)
  slots = engine.num_slots(bucket, dcfg.max_new_tokens, dcfg.block_size)
  cache = put(jax.eval_shape(lambda: engine.init_cache(cfg, batch, slots, dtype)))
  prompt = put(jax.ShapeDtypeStruct((batch, bucket), jnp.int32))
  lengths = put(jax.ShapeDtypeStruct((batch,), jnp.int32))
  keys = put(jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch)))
  active = put(jax.ShapeDtypeStruct((batch,), jnp.bool_))
  sequences = s.config.rollout.num_prompts * s.config.rollout.num_responses
  blocks = -(-dcfg.max_new_tokens // dcfg.block_size)
  forwards_per_block = min(dcfg.num_steps, dcfg.block_size / s.tpf)
  return [Program("rollout/decode", engine.decode, (params, prompt, lengths, keys, active, cache),
                  {"cfg": cfg, "dcfg": dcfg}, -(-sequences // batch), tuple(s.state), None,
                  (blocks, forwards_per_block))]
