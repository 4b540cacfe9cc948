"""The shared online-softmax state against a numpy softmax: folds in any split, merged by `combine`: fp32, 1e-6."""

import jax.numpy as jnp
import numpy as np

from lrl_jax.kernels import softmax


def test_folds_and_combine_equal_one_softmax():
  rng = np.random.default_rng(0)
  rows, keys, d = 5, 12, 3
  scores, v = rng.standard_normal((rows, keys)) * 4, rng.standard_normal((keys, d))
  allow = rng.random((rows, keys)) < 0.7
  allow[3] = False  # a row that sees no key
  e = np.where(allow, np.exp(scores - np.where(allow, scores, -np.inf).max(1, keepdims=True)), 0.0)
  want = np.where(allow.any(1)[:, None], e @ v / np.maximum(e.sum(1, keepdims=True), 1e-30), 0.0)
  want_lse = np.log(np.where(allow, np.exp(scores), 0.0).sum(1)[allow.any(1)])  # rows that see a key

  def fold(state, cols):
    vs = jnp.asarray(v[cols], jnp.float32)
    return softmax.fold(state, jnp.asarray(scores[:, cols], jnp.float32), jnp.asarray(allow[:, cols]),
                        lambda p: p @ vs)

  empty = softmax.empty((rows,), d)
  one = fold(empty, slice(None))
  two = fold(fold(empty, slice(0, 5)), slice(5, None))
  merged = softmax.combine(fold(empty, slice(0, 7)), fold(empty, slice(7, None)))
  for state in (one, two, merged):
    assert np.abs(np.asarray(softmax.normalized(state)) - want).max() <= 1e-6
    lse = np.asarray(softmax.log_sum_exp(state.m, state.l))
    assert np.abs(np.delete(lse, 3) - want_lse).max() <= 1e-5
    assert lse[3] == -softmax.NEG and float(state.l[3]) == 0.0  # no key: zeros out, no probability in a backward
