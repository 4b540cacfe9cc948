"""Rematerialisation policies of the layer scan, by name (config `model.remat`)."""

from __future__ import annotations

import jax

POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def policy(name: str):
  """The jax.checkpoint policy of `name` (None for "none": no remat); a ValueError names the choices."""
  if name not in POLICIES:
    raise ValueError(f"remat={name!r} is not one of {tuple(POLICIES)}")
  return POLICIES[name]
