"""`python -m lrl_jax.bench moe`: one MoE block forward + backward, grouped matmuls vs every expert on every token.

The model's path (`moe.experts_grouped`: sort by expert, one grouped matmul per projection: the tile loop on CPU,
`ragged_dot` on TPU, the tiled batched matmul on GPU; `model/grouped_matmul.py`) against the all-experts dense
form (`moe.dense_reference`: each token through all experts, weighted by a dense [tokens, experts] matrix that is
zero off its top-k), both jitted, on the same inputs. Outputs and every gradient (input, router, the three expert
projections) are checked equal before anything is timed; tokens/s is the median of `repeats` timed calls.
"""

from __future__ import annotations

import statistics
import time

from absl import flags

from lrl_jax import cli
from lrl_jax.errors import UserError

PROG = "python -m lrl_jax.bench moe"
TOL = 1e-4  # fp32: max |Δ| relative to the largest magnitude of each compared array
PATH_NAMES = {"cpu": "tile loop", "tpu": "ragged_dot"}  # grouped_matmul's choice per platform; else tiled batched


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("tokens", 512, "tokens through the block", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("hidden", 1024, "hidden size (SDAR-30B-A3B: 2048)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("experts", 128, "experts (SDAR-30B-A3B: 128)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("top_k", 8, "experts per token (SDAR-30B-A3B: 8)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("width", 384, "expert intermediate size (SDAR-30B-A3B: 768)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "timed calls per path (median)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "random inputs", flag_values=fv)


def main(argv: list[str] | None = None) -> int:
  return cli.run(define_flags, run, argv, PROG, __doc__)


def _inputs(a):
  import jax
  import jax.numpy as jnp
  keys = jax.random.split(jax.random.key(a.seed), 6)
  x = jax.random.normal(keys[0], (a.tokens, a.hidden), jnp.float32)
  router = jax.random.normal(keys[1], (a.hidden, a.experts), jnp.float32) * a.hidden ** -0.5
  proj = lambda k, shape, fan_in: jax.random.normal(k, shape, jnp.float32) * fan_in ** -0.5
  gate = proj(keys[2], (a.experts, a.hidden, a.width), a.hidden)
  up = proj(keys[3], (a.experts, a.hidden, a.width), a.hidden)
  down = proj(keys[4], (a.experts, a.width, a.hidden), a.width)
  cotangent = jax.random.normal(keys[5], (a.tokens, a.hidden), jnp.float32)
  return (x, router, gate, up, down), cotangent


def _step(experts_fn, top_k: int):
  """jit of (inputs, cotangent) → (output, gradients of <output, cotangent> w.r.t. every input)."""
  import jax
  import jax.numpy as jnp

  from lrl_jax.model import moe

  def block(x, router, gate, up, down):
    return experts_fn(x, moe.route(x, router, top_k, True), gate, up, down)

  def run(inputs, cotangent):
    out, vjp = jax.vjp(block, *inputs)
    return out, vjp(cotangent)

  return jax.jit(run), jnp


def _time(fn, args, repeats: int) -> float:
  import jax
  jax.block_until_ready(fn(*args))  # compile + warm
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def run(a) -> int:
  import jax
  import numpy as np

  from lrl_jax.model import moe

  if a.top_k > a.experts:
    raise UserError(f"--top_k: {a.top_k} exceeds --experts {a.experts}")
  jax.config.update("jax_default_matmul_precision", "highest")
  inputs, cotangent = _inputs(a)
  grouped, _ = _step(moe.experts_grouped, a.top_k)
  dense, _ = _step(moe.dense_reference, a.top_k)
  got, want = grouped(inputs, cotangent), dense(inputs, cotangent)
  names = ("output", "d input", "d router", "d gate", "d up", "d down")
  for name, g, w in zip(names, (got[0], *got[1]), (want[0], *want[1])):
    g, w = np.asarray(g), np.asarray(w)
    err = float(np.abs(g - w).max()) / max(float(np.abs(w).max()), 1e-30)
    if not err <= TOL:
      raise AssertionError(f"{name}: grouped and dense differ by {err:.2e} (relative), more than {TOL}")
  t_grouped = _time(grouped, (inputs, cotangent), a.repeats)
  t_dense = _time(dense, (inputs, cotangent), a.repeats)
  flop = lambda experts: 3 * 3 * 2 * a.tokens * experts * a.hidden * a.width  # fwd + bwd of 3 projections
  print(f"MoE block fwd+bwd on {jax.devices()[0].device_kind} ({jax.device_count()} device), fp32: {a.tokens} tokens, "
        f"hidden {a.hidden}, {a.experts} experts top-{a.top_k}, width {a.width}")
  print(f"outputs and 5 gradients equal (max relative |Δ| <= {TOL})")
  print(f"{'path':<28}{'s/call':>9}{'tokens/s':>11}{'GFLOP/s':>9}")
  grouped_name = "grouped (" + PATH_NAMES.get(jax.default_backend(), "tiled batched") + ")"
  for name, seconds, experts in ((grouped_name, t_grouped, a.top_k), ("dense all-experts", t_dense, a.experts)):
    print(f"{name:<28}{seconds:>9.3f}{a.tokens / seconds:>11.0f}{flop(experts) / seconds / 1e9:>9.1f}")
  print(f"grouped / dense tokens/s: {t_dense / t_grouped:.2f}x (FLOP ratio {a.experts / a.top_k:.0f}x)")
  return 0
