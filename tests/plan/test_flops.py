"""FLOPs read off optimized HLO: loop bodies times their trip counts, against counts written out by hand."""

import jax
import jax.numpy as jnp
import pytest

from lrl_jax.plan.flops import hlo_flops
from lrl_jax.plan.search import largest_fitting
from lrl_jax.plan.memory import Report

M, K, LAYERS = 64, 256, 6
MATMUL = 2 * M * K * K  # one [M, K] @ [K, K]


def _compile(f, *args):
  return jax.jit(f).lower(*args).compile()


def _abstract(*shapes):
  return [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]


def test_scan_cond_and_data_dependent_while():
  def f(w, x, flag):
    x, _ = jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)  # LAYERS matmuls
    x = jax.lax.cond(flag, lambda c: (c @ c.T) @ c, lambda c: c, x)  # the costlier branch: 2 * 2*M*M*K
    x, _ = jax.lax.while_loop(lambda s: s[0].sum() > s[1], lambda s: (s[0] @ w[0], s[1] + 1), (x, 0.0))
    return x.sum()

  compiled = _compile(f, *_abstract((LAYERS, K, K), (M, K)), jax.ShapeDtypeStruct((), jnp.bool_))
  fixed = LAYERS * MATMUL + 2 * (2 * M * M * K)
  assert hlo_flops(compiled.as_text()) == (fixed + MATMUL, 1, 0)  # unknown trip count: once
  assert hlo_flops(compiled.as_text(), (10,)).total == fixed + 10 * MATMUL
  assert compiled.cost_analysis()["flops"] < fixed  # XLA's own count takes the scan body once


def test_nested_loops_and_backward_pass():
  """A scanned layer with a lax.map inside, differentiated: forward 1 matmul + backward 2 per (layer, chunk)."""
  def loss(w, x):
    def layer(c, wi):
      return jax.lax.map(lambda part: jnp.tanh(part @ wi), c.reshape(4, M // 4, K)).reshape(M, K), None
    return jax.lax.scan(layer, x, w)[0].sum()

  compiled = _compile(jax.grad(loss), *_abstract((LAYERS, K, K), (M, K)))
  assert hlo_flops(compiled.as_text()).total == pytest.approx(3 * LAYERS * MATMUL)


def test_batched_dot_counts_batch_and_contraction():
  compiled = _compile(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), *_abstract((3, 8, 16), (3, 16, 32)))
  assert hlo_flops(compiled.as_text()).total == 2 * 3 * 8 * 16 * 32
  assert hlo_flops(compiled.as_text()).total == compiled.cost_analysis()["flops"]


def _reports(value, limit):
  return [Report("p", 1, argument=value)] if value <= limit else [Report("p", 1, argument=value * 10)]


@pytest.mark.parametrize("limit,expected", [(0, None), (8, 8), (24, 24), (63, 56)])
def test_search_finds_the_largest_multiple_that_fits(limit, expected):
  calls = []

  def compile_at(v):
    calls.append(v)
    return _reports(v, limit)

  found = largest_fitting(64, 8, lambda rs: rs[0].argument <= limit, compile_at)
  assert found.value == expected
  assert len(calls) <= 4  # the smallest first, then a binary search over 8..56
  assert all((v <= limit) == (outcome == "fits") for v, outcome in found.tried)


def test_response_lengths_against_scipy_and_sampling():
  """plan --response_tokens: the log-normal's mean blocks per response (capped) against 10^6 numpy draws, and the
  typical longest of n responses against scipy's quantile."""
  import numpy as np
  from scipy import stats

  from lrl_jax.plan.programs import ResponseLengths

  r = ResponseLengths(400.0, 0.8)
  draws = np.minimum(8192, np.random.default_rng(0).lognormal(np.log(400.0), 0.8, 1_000_000))
  assert r.mean_blocks(32, 8192) == pytest.approx(np.ceil(draws / 32).mean(), rel=2e-3)
  want = stats.lognorm(0.8, scale=400.0).ppf(1 - 1 / 4097)
  assert r.longest(4096, 8192) == int(np.ceil(want))
  assert r.longest(10**9, 8192) == 8192  # capped


def test_bad_response_tokens_is_one_error_line():
  from lrl_jax.plan.inputs import PlanError, parse_response_tokens

  assert parse_response_tokens("") is None and parse_response_tokens("350,0.8") == (350.0, 0.8)
  for bad in ("350", "a,b", "-1,0.5", "350,-1", "1,2,3"):
    with pytest.raises(PlanError, match="--response_tokens"):
      parse_response_tokens(bad)
