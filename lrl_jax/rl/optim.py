"""Optimizer of SPEC §7.4: global-norm clipping then AdamW on a linear-warmup-then-constant schedule."""

import jax.numpy as jnp
import optax


def lr_schedule(lr: float, warmup_steps: int) -> optax.Schedule:
  """lr * min(1, (k + 1) / warmup_steps) at update k (0-based), so the first update already moves the weights."""
  if warmup_steps <= 1:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(lr / warmup_steps, lr, warmup_steps - 1)  # constant at lr past the ramp


def make_optimizer(lr: float = 1e-6, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, warmup_steps: int = 10,
                   max_grad_norm: float = 1.0) -> optax.GradientTransformation:
  """clip_by_global_norm(max_grad_norm) -> AdamW whose learning rate is kept in the state for `current_lr`."""
  adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=lr_schedule(lr, warmup_steps), b1=b1, b2=b2,
                                                eps=eps, weight_decay=weight_decay)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def current_lr(opt_state: optax.OptState) -> jnp.ndarray:
  """Learning rate the latest update used (schedule(0) right after init), read from a `make_optimizer` state."""
  return opt_state[1].hyperparams["learning_rate"]
