"""Finiteness guards: a run stops before a non-finite loss, gradient or parameter is applied or saved."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from lrl_jax.errors import UserError


class NonFiniteError(UserError):
  """Training produced a NaN/inf; the message names the step, the value and the last good checkpoint."""


@jax.jit
def all_finite(tree) -> jax.Array:
  """True when every element of every leaf is finite (one fused reduction, no host copy of the tree)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


global_norm = jax.jit(optax.tree.norm)


def check_update(step: int, loss: float, grad_norm: float, last_good: str) -> None:
  """Raise NonFiniteError unless the loss and gradient norm of update `step` are finite."""
  for name, value in (("loss", loss), ("gradient norm", grad_norm)):
    if not math.isfinite(value):
      raise NonFiniteError(f"step {step}: non-finite {name} ({value}); the update was not applied and nothing was "
                           f"saved; last good checkpoint: {last_good}")
