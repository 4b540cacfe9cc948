"""The load-balancing loss of an MoE update is the whole update's (transformers' formula over every token of it),
whatever its split into micro-batches: accumulated gradients over 4 micro-batches, with the coefficients from one
router-load pass (`losses.router_coefficients`, what the learner does), equal the gradient of the RL loss plus
coef × `moe.load_balancing_loss` of one forward over all rows (fp32, 1e-5 relative). 8 rows in one micro-batch is
the same split as the reference, so it is not run."""

import dataclasses

import jax
import numpy as np
import pytest

from lrl_jax.model import init_params, moe
from lrl_jax.rl import batch as batch_lib, layout, losses, step as step_lib
from lrl_jax.weights import tiny_moe
from tests.rl.test_rl_on_policy import _rows

COEF = 0.5


def _split(params, r, sc, logp_old, micro):
  """What the learner runs: router-load passes, then micro_grads/accumulate with the update's coefficients."""
  idx = np.arange(r.batch.tokens.shape[0])
  batches = lambda: batch_lib.micro_batches(r, idx, micro, sc.loss, logp_old, logp_old)
  load, tokens = 0.0, 0.0
  for mb in batches():
    mb_load, mb_tokens = step_lib.router_load(params, mb["tokens"], mb["noisy_masked"], mb["valid"], sc=sc)
    load, tokens = load + np.asarray(mb_load, np.float64), tokens + float(np.sum(mb_tokens))
  coefficients = losses.router_coefficients(load, tokens)
  grads = aux = None
  for mb in batches():
    mb = step_lib.MicroBatch(**mb)
    if grads is None:
      grads, aux = step_lib.micro_grads(params, mb, coefficients, sc=sc)
    else:
      grads, aux = step_lib.accumulate(params, grads, aux, mb, coefficients, sc=sc)
  return grads, losses.finalize_metrics(jax.tree.map(np.asarray, aux))


def _whole(params, r, sc, logp_old):
  """The RL loss of all rows in one micro-batch plus COEF × the load-balancing loss of one forward over them."""
  (mb,) = batch_lib.micro_batches(r, np.arange(r.batch.tokens.shape[0]), r.batch.tokens.shape[0], sc.loss, logp_old,
                                  logp_old)
  mb = step_lib.MicroBatch(**mb)
  rl_only = step_lib.resolve(dataclasses.replace(sc, loss=dataclasses.replace(sc.loss, router_aux_loss_coef=0.0)),
                             jax.devices())

  def loss(params):
    rl, _ = step_lib._loss(params, mb, rl_only)
    stats = layout.row_logprobs(params, sc.model, mb.tokens, mb.noisy_masked, mb.valid, block_size=sc.block_size,
                                router_stats=True)[2]
    balance = moe.load_balancing_loss(stats)
    return rl + COEF * balance, balance

  return jax.jit(jax.grad(loss, has_aux=True))(params)


def test_update_load_balancing_loss_is_split_independent():
  with jax.default_matmul_precision("highest"):
    cfg = tiny_moe.tiny_moe_config(num_experts=8, top_k=2, num_heads=4, num_kv_heads=2, vocab_size=128)
    params = init_params(cfg, jax.random.key(0), std=0.3)
    # on-policy (logp_old is the policy's own): no separate log-prob program to compile
    sc = step_lib.StepConfig(cfg, losses.LossConfig(kl_beta=0.0, router_aux_loss_coef=COEF), block_size=4,
                             on_policy=True)
    r = _rows(cfg)
    logp_old = np.zeros(r.batch.tokens.shape, np.float32)  # not read on-policy
    want, balance = _whole(params, r, sc, logp_old)
    got, metrics = _split(params, r, sc, logp_old, 2)  # 4 micro-batches
  # per micro-batch products of sums (the scheme this replaced) give 12% more here: the metric check can fail
  assert abs(metrics["router_aux_loss"] - float(balance)) <= 1e-5 * float(balance)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):  # a dropped balance term fails here (COEF 0.5)
    scale = max(float(np.abs(np.asarray(w)).max()), 1e-6)
    assert float(np.abs(np.asarray(g) - np.asarray(w)).max()) <= 1e-5 * scale


def test_the_loss_on_without_coefficients_is_an_error():
  """A caller that forgets the router-load pass gets an error, not a silently dropped term."""
  cfg = tiny_moe.tiny_moe_config(num_experts=8, top_k=2, num_heads=4, num_kv_heads=2, vocab_size=128)
  params = init_params(cfg, jax.random.key(0))
  sc = step_lib.StepConfig(cfg, losses.LossConfig(kl_beta=0.0, router_aux_loss_coef=COEF), block_size=4)
  r = _rows(cfg)
  zeros = np.zeros(r.batch.tokens.shape, np.float32)
  mb = step_lib.MicroBatch(**next(batch_lib.micro_batches(r, np.arange(8), 8, sc.loss, zeros, zeros)))
  with pytest.raises(ValueError, match="router_aux_loss_coef > 0 needs the update's coefficients"):
    step_lib.micro_grads(params, mb, sc=sc)
