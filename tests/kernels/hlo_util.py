"""Compiled HLO in the kernel tests: the engine compiled with the Pallas prefix for a deviceless mesh, and reading
its text."""

import re
from typing import Any, NamedTuple

_GATHER = re.compile(r"=\s*(.*?)\s*\ball-gather(?:-start)?\(")


def gathered_shapes(text: str) -> list[str]:
  """The result types of every all-gather in a compiled module (tuples of a combined gather included)."""
  return [m.group(1) for m in map(_GATHER.search, text.splitlines()) if m]


class EngineCompile(NamedTuple):
  """The engine call compiled for a mesh: its text and the engine's shape."""
  text: str
  shape: Any


def pallas_engine(devices, fsdp: int, tensor: int, slots: int) -> EngineCompile:
  """The rollout engine (a tiny bf16 model with head_dim 128 and 2 kv heads, `attn_impl="pallas"`) compiled for
  `devices` as a (data 1, fsdp, tensor) mesh at `slots` slots, its state and params abstract."""
  import jax
  import jax.numpy as jnp

  from lrl_jax.decode import DecodeConfig, api, programs
  from lrl_jax.model import init_params
  from lrl_jax.parallel import mesh as mesh_lib
  from lrl_jax.weights import tiny

  mesh = mesh_lib.make_mesh(1, fsdp, tensor, devices=devices)
  cfg = tiny.tiny_config(hidden_size=256, head_dim=128, vocab_size=512, intermediate_size=512)
  assert cfg.num_kv_heads == 2  # one per device at tensor 2
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=28, dtype="bfloat16", attn_impl="pallas")
  shape = api.engine_shape(cfg, dcfg, slots, 36, shards=programs.shards(mesh))
  prog = programs.for_mesh(mesh, programs.kv_split(cfg, mesh))
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  args = programs.abstract_run_args(cfg, shapes, shape, jnp.bfloat16, mesh)
  compiled = prog.run.lower(*args, cfg=cfg, dcfg=dcfg, shape=shape, bucket=shape.max_pages).compile()
  return EngineCompile(compiled.as_text(), shape)


def pool_pattern(shape) -> re.Pattern:
  """Every layer's KV pages of an engine of `shape`, any kv-head count: bf16[layers, pages, page, kh, 128]."""
  return re.compile(rf"bf16\[\d+,{shape.pages},{shape.page_size},\d+,128\]")
