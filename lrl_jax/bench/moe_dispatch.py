"""`python -m lrl_jax.bench moe_dispatch`: what the expert-parallel dispatch moves, against what XLA chooses.

One MoE block's forward + backward at SDAR-30B-A3B's shapes, compiled without devices for a target's mesh (tokens
over the batch axes, experts over `expert`, their width over `tensor`), two ways: the model's dispatch
(`model/moe_dispatch.py`: tokens gathered to the experts' devices, outputs reduce-scattered back) and the same
block left to the SPMD partitioner (`moe.experts_grouped` under the mesh, XLA's own choice of collectives). Per
device, from each compiled program: bytes every collective kind returns (its result shapes), and temporaries. The
values are not run (no device): the dispatch's equality to one device is tests/model/test_moe_dispatch.py's.
"""

from __future__ import annotations

import re

from absl import flags

from lrl_jax import cli
from lrl_jax.errors import UserError

PROG = "python -m lrl_jax.bench moe_dispatch"
KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_OP = re.compile(r"=\s*(.*?)\s*\b(" + "|".join(KINDS) + r")(?:-start)?\(")
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}
GIB = 2 ** 30


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("target", "h200x8", "deviceless target (plan's names: h100xN, h200xN, v5p-N, ...)",
                      flag_values=fv)
  flags.DEFINE_integer("fsdp", 1, "mesh fsdp", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("expert", 8, "mesh expert (experts split over it)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("tensor", 1, "mesh tensor (expert width split over it)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("tokens", 9216, "tokens per batch shard (one training row of 256 + 8192 positions: 9216)",
                       lower_bound=1, flag_values=fv)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, run, argv, PROG, __doc__)


def collective_bytes(text: str) -> dict[str, int]:
  """Bytes each collective kind returns per device in a compiled module (an async all-gather or collective-permute
  start's type pairs operands with results: its results count; a loop body's collectives count once)."""
  out = dict.fromkeys(KINDS, 0)
  for line in text.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    shapes = [(_BYTES[t], [int(d) for d in dims.split(",") if d]) for t, dims in _SHAPE.findall(m.group(1))]
    if m.group(2) in ("all-gather", "collective-permute") and "-start(" in line and len(shapes) > 1:
      shapes = shapes[len(shapes) // 2:]  # ((operands), (results))
    for size, dims in shapes:
      n = size
      for d in dims:
        n *= d
      out[m.group(2)] += n
  return out


def _compile(experts_fn, mesh, top_k: int, shapes, specs):
  import jax
  from jax.sharding import NamedSharding

  from lrl_jax.model import moe
  from lrl_jax.parallel import mesh as mesh_lib

  def run(x, router, gate, up, down, cotangent):
    block = lambda *a: experts_fn(a[0], moe.route(a[0], a[1], top_k, True), *a[2:])
    out, vjp = jax.vjp(block, x, router, gate, up, down)
    return out, vjp(cotangent)

  args = [jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, p)) for s, p in zip(shapes, specs)]
  with mesh_lib.activate(mesh):
    return jax.jit(run).lower(*args).compile()


def run(a) -> int:
  import os
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  import jax
  import jax.numpy as jnp
  from jax.experimental import topologies

  from lrl_jax.model import moe, moe_dispatch, presets
  from lrl_jax.parallel import mesh as mesh_lib
  from lrl_jax.plan import targets

  target = targets.parse_target(a.target)
  shards = a.fsdp * a.expert * a.tensor
  if target.num_devices % shards:
    raise UserError(f"--expert/--tensor/--fsdp: {shards} devices do not divide {a.target}'s {target.num_devices}")
  cfg = presets.preset_config("sdar-30b-a3b", 32)
  if cfg.num_experts % a.expert:
    raise UserError(f"--expert: {a.expert} does not divide the {cfg.num_experts} experts")
  targets.check_extra(target)
  data = target.num_devices // shards
  mesh = topologies.make_mesh(targets.topology(target), (data, a.fsdp, a.expert, a.tensor), mesh_lib.AXES)
  batch = data * a.fsdp * a.expert
  x, e, w = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
  bf16 = jnp.bfloat16
  shapes = [jax.ShapeDtypeStruct(s, bf16) for s in ((batch * a.tokens, e), (e, x), (x, e, w), (x, e, w), (x, w, e),
                                                    (batch * a.tokens, e))]
  names = (("batch", None), ("embed", None), ("expert", "embed", "mlp"), ("expert", "embed", "mlp"),
           ("expert", "mlp", "embed"), ("batch", None))
  specs = [mesh_lib.fitted_spec(s.shape, n, mesh) for s, n in zip(shapes, names)]
  rows = []
  for name, fn in (("dispatch (tokens to experts)", moe_dispatch.experts), ("XLA's choice", moe.experts_grouped)):
    compiled = _compile(fn, mesh, cfg.num_experts_per_tok, shapes, specs)
    rows.append((name, collective_bytes(compiled.as_text()), compiled.memory_analysis().temp_size_in_bytes))
  print(f"one MoE block fwd+bwd, SDAR-30B-A3B shapes (bf16, {x} experts top-{cfg.num_experts_per_tok}, hidden {e}, "
        f"width {w}), {a.tokens} tokens per batch shard, compiled for {a.target}, mesh data={data} fsdp={a.fsdp} "
        f"expert={a.expert} tensor={a.tensor}; per device, GiB returned by each collective kind, and temporaries")
  print(f"{'path':<30}" + "".join(f"{k:>19}" for k in KINDS) + f"{'total':>9}{'temp':>9}")
  for name, moved, temp in rows:
    print(f"{name:<30}" + "".join(f"{moved[k] / GIB:>19.3f}" for k in KINDS)
          + f"{sum(moved.values()) / GIB:>9.3f}{temp / GIB:>9.2f}")
  ours, xla = (sum(r[1].values()) for r in rows)
  print(f"XLA's choice / dispatch, collective bytes: {xla / max(ours, 1):.2f}x; temporaries: "
        f"{rows[1][2] / max(rows[0][2], 1):.2f}x")
  return 0
