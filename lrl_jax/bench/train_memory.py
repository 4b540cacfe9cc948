"""Per-device memory of the training step's programs compiled deviceless for a GPU/TPU target (no device needed).

  python -m lrl_jax.bench.train_memory --preset=sdar-8b --target=h100x8 --rows=64 --seq=8448 --remat=full

Compiles `micro_grads` (and optionally the optimizer apply) at rows x L with the [noisy | clean] layout (noisy
window `--noisy` positions, default the bucketed row length) for the target's devices, mesh data x fsdp x tensor,
and prints the compiler's argument / output / temp / alias bytes per device as one JSON line per program.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from lrl_jax.bench import shapes
from lrl_jax.model import init_params
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.rl import batch as batch_lib, losses, optim, step as step_lib

GIB = 1 << 30


def define_flags() -> None:
  flags.DEFINE_enum("preset", "sdar-8b", sorted(shapes.PRESETS), "model shape")
  flags.DEFINE_string("target", "h100x8", "a `python -m lrl_jax.plan` target (h100x8, v5p-8, ...)")
  flags.DEFINE_list("mesh", ["1", "8", "1"], "data,fsdp,tensor")
  flags.DEFINE_integer("rows", 64, "micro-batch rows over all devices")
  flags.DEFINE_integer("seq", 8448, "row length before bucketing (prompt + response)")
  flags.DEFINE_integer("noisy", 0, "noisy window positions (0: the bucketed row length)")
  flags.DEFINE_integer("block_size", 32, "block size")
  flags.DEFINE_string("dtype", "bfloat16", "compute dtype")
  flags.DEFINE_string("remat", "full", "remat policy (model/remat.py)")
  flags.DEFINE_integer("q_chunk", 1024, "attention query tile")
  flags.DEFINE_string("attn_impl", "auto", "training attention backend (auto: the target platform's)")
  flags.DEFINE_bool("apply", False, "also compile the optimizer apply")


def main(argv) -> int:
  del argv
  jax.config.update("jax_platforms", "cpu")
  from lrl_jax.plan import targets

  args = flags.FLAGS
  cfg = shapes.preset_config(args.preset, args.block_size)
  topo = targets.topology(targets.parse_target(args.target))
  data, fsdp, tensor = map(int, args.mesh)
  mesh = mesh_lib.make_mesh(data, fsdp, tensor, devices=topo.devices)
  length = batch_lib.length_bucket(args.seq, args.block_size)
  noisy = args.noisy or length
  shapes_ = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  p_shard = mesh_lib.param_shardings(cfg, shapes_, mesh)
  params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes_, p_shard)
  row = lambda dtype, *shape: jax.ShapeDtypeStruct((args.rows, *shape), dtype,
                                                   sharding=mesh_lib.batch_sharding(mesh, 1 + len(shape)))
  mb = step_lib.MicroBatch(row(jnp.int32, length), row(bool, length), row(bool, length), row(bool, length),
                           row(jnp.float32), *(row(jnp.float32, length) for _ in range(5)))
  sc = step_lib.StepConfig(cfg, losses.LossConfig(), args.block_size, args.dtype, args.remat, args.q_chunk,
                           noisy_start=length - noisy, attn_impl=args.attn_impl)
  fns = step_lib.functions(sc, p_shard)
  programs = [("micro_grads", fns.micro_grads, (params, mb))]
  if args.apply:
    optimizer = optim.make_optimizer()
    o_shard = mesh_lib.opt_state_shardings(optimizer, shapes_, p_shard, mesh)
    opt = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                       jax.eval_shape(optimizer.init, shapes_), o_shard)
    programs.append(("apply", step_lib.make_apply(optimizer, (p_shard, o_shard)), (params, opt, params)))
  for name, fn, fargs in programs:
    start = time.perf_counter()
    with mesh_lib.activate(mesh):
      m = fn.lower(*fargs).compile().memory_analysis()
    print(json.dumps({
        "program": name, "target": args.target, "preset": args.preset, "rows": args.rows, "L": length,
        "noisy": noisy, "remat": args.remat, "attn_impl": step_lib.resolve(sc, mesh.devices.flat).attn_impl,
        "q_chunk": args.q_chunk, "args_gib": round(m.argument_size_in_bytes / GIB, 2),
        "out_gib": round(m.output_size_in_bytes / GIB, 2), "temp_gib": round(m.temp_size_in_bytes / GIB, 2),
        "alias_gib": round(m.alias_size_in_bytes / GIB, 2),
        "peak_gib": round((m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                           - m.alias_size_in_bytes) / GIB, 2),
        "compile_s": round(time.perf_counter() - start, 1)}), flush=True)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
