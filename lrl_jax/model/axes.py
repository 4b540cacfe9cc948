"""Logical axis names for activations, turned into sharding constraints when a mesh and rules are active.

The model only names axes (`constrain(x, ("batch", "seq", "embed"))`); `lrl_jax.parallel` activates a Mesh and the
logical→mesh rules. Without an active mesh every constraint is a no-op, so the model runs unchanged on one device.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("lrl_axes", default=None)


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
  """Map logical axis names to a PartitionSpec; a mesh axis is used at most once (first name wins)."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in names:
    target = table.get(name) if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(t for t in targets if t not in used)
    used.update(targets)
    out.append(None if not targets else targets[0] if len(targets) == 1 else targets)
  return PartitionSpec(*out)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Within this context (and while tracing under it) `constrain` shards activations on `mesh`."""
  token = _ACTIVE.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; identity when no mesh is active."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, rules)))
