"""Compile the rollout engine's call for several meshes of 8 host devices; print per-device FLOPs and the collectives
in its HLO as JSON. Run by test_rollout_layout.py with XLA_FLAGS=--xla_force_host_platform_device_count=8."""

import json
import re
import sys

import jax
import jax.numpy as jnp

from lrl_jax.decode import DecodeConfig, api, programs
from lrl_jax.model import init_params
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.weights import tiny

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def compile_engine(mesh, slots: int):
  cfg = tiny.tiny_config(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=128)
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=28, threshold=0.5)
  shape = api.engine_shape(cfg, dcfg, slots, 36, shards=programs.shards(mesh))
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  prog = programs.for_mesh(mesh, programs.kv_split(cfg, mesh))
  args = programs.abstract_run_args(cfg, shapes, shape, jnp.float32, mesh)
  compiled = prog.run.lower(*args, cfg=cfg, dcfg=dcfg, shape=shape, bucket=shape.max_pages).compile()
  text = compiled.as_text()
  lines = [line for line in text.splitlines() if re.search(rf"\b({'|'.join(COLLECTIVES)})(-start)?\(", line)]
  counts = {c: sum(bool(re.search(rf"\b{c}(-start)?\(", line)) for line in lines) for c in COLLECTIVES}
  return {"flops": compiled.cost_analysis()["flops"], "collectives": counts,
          "group_sizes": sorted({_group_size(line) for line in lines})}


def _group_size(line: str) -> int:
  """Devices per replica group of one collective: `replica_groups={{0,1},...}` or the iota form `[n,k]<=[...]`."""
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
  if iota:
    return int(iota.group(2))
  groups = re.search(r"replica_groups=\{\{([\d,]+)\}", line)
  return len(groups.group(1).split(",")) if groups else -1


def main():
  slots = 16
  out = {"one": compile_engine(mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]), slots)}
  for name, axes in (("data8", (8, 1, 1)), ("fsdp8", (1, 8, 1)), ("dp4_tp2", (2, 2, 2))):
    out[name] = compile_engine(mesh_lib.make_mesh(*axes), slots)
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
