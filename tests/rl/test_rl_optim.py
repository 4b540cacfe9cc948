"""Optimizer schedule and gradient clipping; fp32 tolerance 1e-6 relative."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrl_jax.rl import optim

TOL = 1e-6


def test_warmup_then_constant():
  schedule = optim.lr_schedule(1e-6, 10)
  for step, want in ((0, 1e-7), (5, 6e-7), (9, 1e-6), (10, 1e-6), (20, 1e-6)):
    assert float(schedule(step)) == pytest.approx(want, rel=TOL), step
  assert float(optim.lr_schedule(3e-4, 0)(0)) == pytest.approx(3e-4, rel=TOL)


def test_current_lr_follows_updates():
  opt = optim.make_optimizer()
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  seen = []
  for _ in range(21):
    _, state = opt.update({"w": jnp.ones(3)}, state, params)
    seen.append(float(optim.current_lr(state)))
  np.testing.assert_allclose([seen[k] for k in (0, 5, 10, 20)], [1e-7, 6e-7, 1e-6, 1e-6], rtol=TOL)


@pytest.mark.parametrize("scale", [100.0, 0.5])
def test_clipping_bounds_what_adam_sees(scale):
  opt = optim.make_optimizer(lr=1e-3, warmup_steps=0, max_grad_norm=1.0)
  params = {"a": jnp.zeros(4), "b": jnp.zeros((2, 2))}
  grads = {"a": jnp.full(4, scale / np.sqrt(8)), "b": jnp.full((2, 2), scale / np.sqrt(8))}  # global norm = scale
  state = opt.init(params)
  updates, state = opt.update(grads, state, params)
  first_moment = state[1].inner_state[0].mu  # (1 - b1) * clipped gradient after one step
  assert float(optax.tree.norm(first_moment)) == pytest.approx(0.1 * min(scale, 1.0), rel=TOL)
  assert float(optax.tree.norm(updates)) <= 1e-3 * np.sqrt(8) * (1 + TOL)
