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


def test_reset_schedule_starts_at_rate_zero():
  schedule = optim.reset_schedule(1e-6, 10)
  for step, want in ((0, 0.0), (1, 1e-7), (7, 7e-7), (10, 1e-6), (15, 1e-6)):
    assert float(schedule(step)) == pytest.approx(want, rel=TOL, abs=1e-15), step
  assert float(optim.reset_schedule(3e-4, 0)(0)) == pytest.approx(3e-4, rel=TOL)


def _adamw_numpy(params, grads_per_step, lr, warmup, wd, clip, b1=0.9, b2=0.999, eps=1e-8):
  """The authors' schedule by hand: per RL step fresh moments, update k at lr * k / warmup, global-norm clipping."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  lrs = []
  for grads in grads_per_step:
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(grads):
      norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in g.values()))
      rate = lr * min(1.0, t / warmup)
      lrs.append(rate)
      for k in p:
        gk = np.asarray(g[k], np.float64) * min(1.0, clip / norm)
        m[k] = b1 * m[k] + (1 - b1) * gk
        v2[k] = b2 * v2[k] + (1 - b2) * gk ** 2
        step = (m[k] / (1 - b1 ** (t + 1))) / (np.sqrt(v2[k] / (1 - b2 ** (t + 1))) + eps)
        p[k] = p[k] - rate * (step + wd * p[k])
  return p, lrs


def test_reset_per_step_matches_a_fresh_adamw_per_rl_step():
  """Two RL steps of four updates: the state re-initialised per step (as the trainer does) against a hand-built
  optax chain made anew per step and against AdamW written out in numpy."""
  rng = np.random.default_rng(0)
  params = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
  grads = [[{k: (rng.normal(size=v.shape) * s).astype(np.float32) for k, v in params.items()} for s in (0.3, 3, 1, 2)]
           for _ in range(2)]
  lr, warmup, wd = 1e-2, 10, 0.05
  opt = optim.make_optimizer(lr=lr, warmup_steps=warmup, weight_decay=wd, max_grad_norm=1.0, reset_per_step=True)
  mine = {k: jnp.asarray(v) for k, v in params.items()}
  ref = dict(mine)
  seen = []
  for step_grads in grads:
    state = opt.init(mine)
    chain = optax.chain(optax.clip_by_global_norm(1.0),
                        optax.adamw(lambda k: lr * jnp.minimum(1.0, k / warmup), weight_decay=wd))
    ref_state = chain.init(ref)
    for g in step_grads:
      updates, state = opt.update(g, state, mine)
      mine = optax.apply_updates(mine, updates)
      seen.append(float(optim.current_lr(state)))
      updates, ref_state = chain.update(g, ref_state, ref)
      ref = optax.apply_updates(ref, updates)
  want, lrs = _adamw_numpy(params, grads, lr, warmup, wd, clip=1.0)
  np.testing.assert_allclose(seen, lrs, rtol=TOL)
  np.testing.assert_allclose(lrs, [0, 1e-3, 2e-3, 3e-3] * 2, rtol=TOL)
  for k in params:
    np.testing.assert_allclose(np.asarray(mine[k]), np.asarray(ref[k]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(mine[k]), want[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(want[k], params[k])  # the updates moved the weights
