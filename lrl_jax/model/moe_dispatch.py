"""Expert parallelism for the MoE block: tokens travel to the devices that hold their experts, weights never move
between expert shards.

The experts are split over the `expert` mesh axis (E shards of X/E experts each). A device all-gathers the tokens of
its expert group over `expert` (x [E·n, e] and their routing), runs its own experts' grouped matmuls on the
(token, expert) pairs routed to them (the others sort last and give zeros), sums each token's weighted local
outputs, and a reduce-scatter (`psum_scatter`) over `expert` hands every device the full sum for its own n tokens.
Dropless with static shapes: the pair buffer holds all E·n·k pairs of the group (the worst case, every pair routed to
one device); the grouped matmul runs over chunks of it and skips (`lax.cond`) the chunks past the pairs routed
here, so compute follows the device's real load, not the buffer.

Why an all-gather and not an all-to-all of pairs: with k ≥ E (SDAR-30B-A3B: k 8, E ≤ 8) the gather moves E·n token
rows in and E·n output rows back per device, while a dropless all-to-all moves up to E·n·k pair rows (its static
buffers are sized for the worst case) and one with a capacity per destination drops tokens.

Where it runs (`experts`, a drop-in for `moe.experts_grouped`):
- every axis automatic (the jitted training step and log-probs under `parallel.activate`): a `shard_map` over the
  mesh's automatic axes, specs from the logical rules: tokens over the batch axes, weights over expert / embed / mlp;
  the weights' embed split (fsdp) is all-gathered inside (FSDP), their mlp split (tensor) summed after `down`.
- `expert` already manual (the rollout engine's `shard_map` over the data axes, weights passed split over `expert`):
  the collectives run in place, `tensor` stays automatic.
- otherwise (no mesh, `expert` of size 1, experts whole on the device): `moe.experts_grouped` unchanged.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from lrl_jax.model import grouped_matmul, moe

AXIS = "expert"  # the mesh axis the experts are split over in training (parallel/mesh.py's rule expert → expert)
ROLLOUT_AXES = ("fsdp", "expert")  # and in the rollout layout (ROLLOUT_RULES: expert → (fsdp, expert))
CHUNK_MIN_ROWS = 512  # smallest chunk of pair rows worth its own conditional


def fit_spec(shape, spec, sizes: dict) -> P:
  """spec for an array of `shape`, keeping per dimension the mesh axes (in `sizes`: name → size) that divide it."""
  out = []
  for dim, axes in zip(shape, tuple(spec or ()) + (None,) * (len(shape) - len(spec or ()))):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept, size = [], 1
    for a in axes:
      if a in sizes and dim % (size * sizes[a]) == 0:
        kept.append(a)
        size *= sizes[a]
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return P(*out)


def _axes(entry) -> tuple[str, ...]:
  return (entry,) if isinstance(entry, str) else tuple(entry or ())


def skip_empty(matmul, chunk: int):
  """`matmul(rows, w, group_sizes)` run over chunks of `chunk` rows; a chunk past the grouped rows (they come first)
  is zeros without computing it. Same result as `matmul` (rows outside every group give zeros)."""

  def zeros(rows, w, sizes):  # varying over the same manual axes as `matmul`'s result (inside a shard_map)
    return grouped_matmul.varying_zeros((rows.shape[0], w.shape[-1]), jnp.result_type(rows, w), rows, w, sizes)

  def run(rows, w, group_sizes):
    r = rows.shape[0]
    if chunk >= r:
      return matmul(rows, w, group_sizes)
    ends = jnp.cumsum(group_sizes)
    starts = ends - group_sizes
    out = []
    for lo in range(0, r, chunk):
      hi = min(lo + chunk, r)
      sizes = jnp.clip(ends, lo, hi) - jnp.clip(starts, lo, hi)  # each group's rows inside [lo, hi)
      out.append(jax.lax.cond(ends[-1] > lo, matmul, zeros, rows[lo:hi], w, sizes))
    return jnp.concatenate(out)

  return run


def _local(x, weights, experts, gate, up, down, *, axes: tuple[str, ...], gather: bool, embed_axes, mlp_axes, matmul,
           chunk_rows: int | None):
  """One device: its tokens x [n, e] with routing weights / experts [n, k], its X/E experts' gate / up [X/E, e', m']
  and down [X/E, m', e'] (e' the embed split over `embed_axes`, gathered here) → its tokens' outputs [n, e]. The
  experts are split over the mesh axes `axes` (E shards in all, the first axis major)."""
  shards = math.prod(jax.sharding.get_abstract_mesh().shape[a] for a in axes)
  local = gate.shape[0]
  if embed_axes:
    gate, up = (jax.lax.all_gather(w, embed_axes, axis=1, tiled=True) for w in (gate, up))
    down = jax.lax.all_gather(down, embed_axes, axis=2, tiled=True)
  if gather:
    x, weights, experts = (jax.lax.all_gather(a, axes, axis=0, tiled=True) for a in (x, weights, experts))
  # Tokens and weights vary over the same axes before the chunks' conditionals, so each gradient's sum over the axes
  # its input does not vary over (the transpose of this cast) runs once, outside them: inside a branch that only some
  # devices take (their loads differ), that collective would wait forever for the others.
  x, weights, gate, up, down = (grouped_matmul.vary_like(a, x, weights, experts, gate, up, down)
                                for a in (x, weights, gate, up, down))
  rel = experts - jax.lax.axis_index(axes) * local  # [N, k] index among this device's experts
  mine = (rel >= 0) & (rel < local)
  routing = moe.Routing(jnp.where(mine, weights, 0), jnp.where(mine, rel, local), None)  # others: group `local`
  rows = x.shape[0] * experts.shape[1]
  chunk = chunk_rows or max(CHUNK_MIN_ROWS, -(-rows // (2 * shards)))  # about half the mean load per device
  y = moe.experts_grouped(x, routing, gate, up, down, matmul=skip_empty(matmul, chunk))  # [N, e] local sum
  y = jax.lax.psum_scatter(y, axes, scatter_dimension=0, tiled=True) if gather else jax.lax.psum(y, axes)
  return jax.lax.psum(y, mlp_axes) if mlp_axes else y


def rollout_group(num_experts: int) -> tuple[str, ...]:
  """Inside the rollout engine's `shard_map` (the data axes manual): the axes its shards hold the experts split over,
  `fsdp` and `expert` in that order where of size > 1 and dividing the experts, as the rollout layout splits them
  (parallel/mesh.py ROLLOUT_RULES, `fit_spec`). () elsewhere, or when no such axis splits them."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or AXIS not in mesh.manual_axes:
    return ()
  axes, size = [], 1
  for a in ROLLOUT_AXES:
    if mesh.shape[a] > 1 and num_experts % (size * mesh.shape[a]) == 0:
      axes.append(a)
      size *= mesh.shape[a]
  return tuple(axes)


def experts(x: jax.Array, routing: moe.Routing, gate: jax.Array, up: jax.Array, down: jax.Array,
            matmul=moe.grouped_matmul, chunk_rows: int | None = None) -> jax.Array:
  """`moe.experts_grouped` (x [n, e] → [n, e]) with the experts split over the mesh (module docstring): over `expert`
  in the training layout, over the rollout group (`rollout_group`) in the engine; `chunk_rows` overrides the chunk
  of pair rows the grouped matmul skips by."""
  mesh = jax.sharding.get_abstract_mesh()
  num_experts = routing.probs.shape[-1]
  grouped = lambda: moe.experts_grouped(x, routing, gate, up, down, matmul=matmul)
  if mesh.empty:
    return grouped()
  run = functools.partial(_local, matmul=matmul, chunk_rows=chunk_rows)
  if AXIS in mesh.manual_axes:  # the engine's shard_map: the weights are this shard's if split
    axes = rollout_group(num_experts)
    shards = math.prod(mesh.shape[a] for a in axes)
    if gate.shape[0] == num_experts:  # passed whole
      return grouped()
    if gate.shape[0] * shards != num_experts:
      raise ValueError(f"a shard holds {gate.shape[0]} of {num_experts} experts: neither all nor 1/{shards} "
                       f"(axes {axes})")
    return run(x, routing.weights, routing.experts, gate, up, down, axes=axes, gather=True, embed_axes=(),
               mlp_axes=())
  auto = {a: mesh.shape[a] for a in mesh.auto_axes}
  if auto.get(AXIS, 1) == 1 or num_experts % auto[AXIS]:
    return grouped()
  spec = lambda shape, names: fit_spec(shape, nn.logical_to_mesh_axes(names), auto)
  w_spec, d_spec = spec(gate.shape, ("expert", "embed", "mlp")), spec(down.shape, ("expert", "mlp", "embed"))
  if _axes(w_spec[0]) != (AXIS,):  # the rules do not split the experts over `expert`
    return grouped()
  rows = spec(x.shape, ("batch", None))[0]
  body = functools.partial(run, axes=(AXIS,), gather=AXIS in _axes(rows), embed_axes=_axes(w_spec[1]),
                           mlp_axes=_axes(w_spec[2]))
  specs = (P(rows, None),) * 3 + (w_spec, w_spec, d_spec)
  return jax.shard_map(body, mesh=mesh, axis_names=set(auto), in_specs=specs, out_specs=P(rows, None))(
      x, routing.weights, routing.experts, gate, up, down)


def local_experts(num_experts: int) -> int:
  """Experts a shard holds inside the rollout engine's `shard_map` (it passes each shard its own part:
  `decode/programs.py`): X / (the rollout group's size); else all X."""
  return num_experts // math.prod(jax.sharding.get_abstract_mesh().shape[a] for a in rollout_group(num_experts))


def any_in_group(flag: jax.Array, num_experts: int) -> jax.Array:
  """A bool OR-ed over the shards of the rollout group (inside the engine's `shard_map`; `rollout_group`): shards
  whose MoE layers exchange tokens must agree on running each forward."""
  axes = rollout_group(num_experts)
  return jax.lax.psum(flag.astype(jnp.int32), axes) > 0 if axes else flag
