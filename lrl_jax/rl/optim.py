"""Optimizer of SPEC §7.4: global-norm clipping then AdamW on a linear-warmup-then-constant schedule.

`reset_per_step` is the authors' schedule: their trainer launches a fresh AdamW for every RL step (no optimizer
state is kept), whose linear warmup starts at 0, so a step's updates run at 0, 1/W, 2/W, ... x lr (W warmup
steps). The learner then re-initialises the state at the start of each RL step (rl/learner.py).
"""

import jax.numpy as jnp
import optax


def lr_schedule(lr: float, warmup_steps: int) -> optax.Schedule:
  """lr * min(1, (k + 1) / warmup_steps) at update k (0-based), so the first update already moves the weights."""
  if warmup_steps <= 1:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(lr / warmup_steps, lr, warmup_steps - 1)  # constant at lr past the ramp


def reset_schedule(lr: float, warmup_steps: int) -> optax.Schedule:
  """lr * min(1, k / warmup_steps) at update k (0-based): HF's linear warmup, whose first update has rate 0."""
  if warmup_steps < 1:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(0.0, lr, warmup_steps)


def make_optimizer(lr: float = 1e-6, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, warmup_steps: int = 10, max_grad_norm: float = 1.0,
                   reset_per_step: bool = False) -> optax.GradientTransformation:
  """clip_by_global_norm(max_grad_norm) -> AdamW whose learning rate is kept in the state for `current_lr`;
  `reset_per_step`: the schedule of a state re-initialised every RL step (module docstring)."""
  schedule = (reset_schedule if reset_per_step else lr_schedule)(lr, warmup_steps)
  adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, b1=b1, b2=b2, eps=eps,
                                                weight_decay=weight_decay)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adamw)


def current_lr(opt_state: optax.OptState) -> jnp.ndarray:
  """Learning rate the latest update used (schedule(0) right after init), read from a `make_optimizer` state."""
  return opt_state[1].hyperparams["learning_rate"]
