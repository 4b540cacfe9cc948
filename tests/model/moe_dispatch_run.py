"""Checks of the expert-parallel dispatch on 8 host devices, those named in argv printed as JSON (run by
test_moe_dispatch.py with XLA_FLAGS=--xla_force_host_platform_device_count=8): `block`, a 2-layer scanned,
rematerialised stack of MoE blocks, its value and 5 gradients on (fsdp 2, expert 2, tensor 2) against the same stack
on one device, and the collectives of the compiled program (none inside the skipped chunks' conditionals);
`decode` / `decode_fsdp`, greedy decode records of a tiny MoE model on (data 2, expert 4) / (data 2, fsdp 2,
expert 2) against one device."""

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

jax.config.update("jax_default_matmul_precision", "highest")

from lrl_jax.bench.moe_dispatch import KINDS  # noqa: E402
from lrl_jax.decode import Decoder, DecodeConfig  # noqa: E402
from lrl_jax.model import init_params, moe, moe_dispatch  # noqa: E402
from lrl_jax.parallel import mesh as mesh_lib  # noqa: E402
from lrl_jax.weights import tiny_moe  # noqa: E402

COLLECTIVE = re.compile(rf"\b({'|'.join(KINDS)})(-start)?\(")
CALLED = re.compile(r"\b(?:to_apply|calls|body|condition|branch_computations|true_computation|false_computation)="
                    r"(\{[^}]*\}|%[\w.\-]+)")


def branch_collectives(text: str) -> list[str]:
  """Collectives of a compiled HLO module that run inside a conditional's branches (or what they call): each is
  a deadlock where devices take different branches."""
  computations, name = {}, None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(", line)
    if head and line.rstrip().endswith("{"):
      name = head.group(1)
      computations[name] = []
    elif name is not None:
      computations[name].append(line)
  called = lambda lines: {c for line in lines for group in CALLED.findall(line) for c in re.findall(r"%([\w.\-]+)", group)}
  todo = called(line for lines in computations.values() for line in lines if " conditional(" in line)
  seen, found = set(), []
  while todo:
    c = todo.pop()
    if c in seen or c not in computations:
      continue
    seen.add(c)
    found += [m.group(0) for m in map(COLLECTIVE.search, computations[c]) if m]
    todo |= called(computations[c])
  return found


N, E, M, X, K, L = 48, 16, 24, 8, 3, 2  # tokens, hidden, expert width, experts, top-k, layers


def _inputs():
  r = np.random.default_rng(0)
  return [jnp.asarray(r.normal(0, s, shape), jnp.float32) for s, shape in
          ((1.0, (N, E)), (0.5, (L, E, X)), (0.2, (L, X, E, M)), (0.2, (L, X, E, M)), (0.2, (L, X, M, E)))]


def _stack(experts):
  """x [N, E] through L residual MoE blocks (lax.scan, each block rematerialised) → a scalar loss and its grads."""
  def loss(x, router, gate, up, down):
    @jax.checkpoint
    def layer(h, w):
      r, g, u, d = w
      return h + experts(h, moe.route(h, r, K, False), g, u, d), None
    h, _ = jax.lax.scan(layer, x, (router, gate, up, down))
    return jnp.sum(h * jnp.cos(jnp.arange(E))), h
  return jax.jit(jax.value_and_grad(loss, argnums=range(5), has_aux=True))


def block_check():
  args = _inputs()
  (_, want), want_grads = _stack(moe.experts_grouped)(*args)
  mesh = mesh_lib.make_mesh(1, 2, 2, expert=2)
  names = (("batch", None), ("layers", "embed", None), ("layers", "expert", "embed", "mlp"),
           ("layers", "expert", "embed", "mlp"), ("layers", "expert", "mlp", "embed"))
  with mesh_lib.activate(mesh):
    args = [jax.device_put(a, NamedSharding(mesh, mesh_lib.fitted_spec(a.shape, n, mesh))) for a, n in zip(args, names)]
    fn = _stack(lambda *a: moe_dispatch.experts(*a, chunk_rows=24))  # 24 tokens x 3 pairs: 3 chunks
    (_, got), grads = fn(*args)
    text = fn.lower(*args).compile().as_text()
  rel = lambda a, b: float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(b).max(), 1e-30))
  gathers = [line for line in text.splitlines() if re.search(r"\ball-gather(-start)?\(", line)]
  shapes = [re.search(r"= (\S+\[[\d,]*\])", line) for line in gathers]
  return {"out": rel(got, want), "grads": [rel(g, w) for g, w in zip(grads, want_grads)],
          "gathered_shapes": sorted({m.group(1) for m in shapes if m}),
          "reduce_scatter": bool(re.search(r"\breduce-scatter(-start)?\(", text)),
          "conditionals": len(re.findall(r"\bconditional\(", text)), "branch_collectives": branch_collectives(text)}


def _decode_check(data, fsdp, expert):
  """Greedy records of a tiny MoE model on 8 devices (the experts split over fsdp x expert in the rollout layout)
  against one device; 5 prompts over 8 slot shards leave 3 idle."""
  cfg = tiny_moe.tiny_moe_config(top_k=2, vocab_size=64)
  params = init_params(cfg, jax.random.key(1), std=0.3)
  dcfg = DecodeConfig(block_size=4, steps=2, threshold=0.5, greedy=True, max_new_tokens=12)
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21], [30], [40, 41, 42, 43, 44]]
  one = Decoder(cfg, dcfg, batch_size=8).generate(params, prompts)
  mesh = mesh_lib.make_mesh(data, fsdp, 1, expert=expert)
  eight = Decoder(cfg, dcfg, batch_size=8, mesh=mesh).generate(params, prompts)
  shards = {str(x.sharding.spec) for x in jax.tree.leaves(mesh_lib.to_rollout(
      cfg, jax.eval_shape(lambda: params), mesh, jnp.float32)(params)["layers"]["expert_gate"])}
  same = [a.response_ids.tolist() == b.response_ids.tolist() and a.step_map.tolist() == b.step_map.tolist()
          for a, b in zip(one, eight)]
  return {"same": same, "lengths": [len(r.response_ids) for r in one], "expert_specs": sorted(shards)}


if __name__ == "__main__":
  checks = {"block": block_check, "decode": lambda: _decode_check(2, 1, 4),
            "decode_fsdp": lambda: _decode_check(2, 2, 2)}
  print(json.dumps({"devices": len(jax.devices()), **{name: checks[name]() for name in sys.argv[1:]}}))
