"""Compiled pieces of the RL update: row log-probs, micro-batch gradients accumulated exactly, the optimizer update.

Loss weights are computed on the host over the whole accumulated batch, so the sum of micro-batch gradients is
the gradient of the accumulated batch's loss whatever the split. Params are arguments (never constants); the
optimizer update donates params and state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lrl_jax.model.config import ModelConfig
from lrl_jax.rl import layout, losses


class MicroBatch(NamedTuple):
  """Rows of one micro-batch: everything [rows, L] except advantages [rows]."""
  tokens: jax.Array
  noisy_masked: jax.Array
  valid: jax.Array
  scored: jax.Array
  advantages: jax.Array
  logp_old: jax.Array
  logp_ref: jax.Array
  w_policy: jax.Array
  w_kl: jax.Array
  w_nll: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the compiled step functions."""
  model: ModelConfig
  loss: losses.LossConfig
  block_size: int
  dtype: str = "float32"
  remat: str = "none"
  q_chunk: int = 0
  noisy_start: int = 0  # layout.noisy_start of the batch: the noisy copy leaves out the blocks before it


def _logprobs(params, batch_tokens, noisy_masked, valid, sc: StepConfig):
  return layout.row_logprobs(params, sc.model, batch_tokens, noisy_masked, valid, block_size=sc.block_size,
                             dtype=jnp.dtype(sc.dtype), remat=sc.remat, q_chunk=sc.q_chunk or None,
                             start=sc.noisy_start)


@functools.partial(jax.jit, static_argnames=("sc",))
def logprobs(params, tokens, noisy_masked, valid, *, sc: StepConfig):
  """Per-token log-probs [rows, L] of the training rows (logp_old / logp_ref), no gradient."""
  return _logprobs(params, tokens, noisy_masked, valid, sc)[0]


def _loss(params, mb: MicroBatch, sc: StepConfig):
  logp, entropy = _logprobs(params, mb.tokens, mb.noisy_masked, mb.valid, sc)
  scored = mb.scored.astype(bool)
  logp = jnp.where(scored, logp, 0.0)  # unscored positions never contribute (nor a -inf at a pad)
  weights = losses.LossWeights(mb.w_policy, mb.w_kl, mb.w_nll)
  return losses.rl_loss(logp, jnp.where(scored, mb.logp_old, 0.0), jnp.where(scored, mb.logp_ref, 0.0),
                        mb.advantages, scored, weights, sc.loss, entropy=entropy)


def _grads(params, mb: MicroBatch, sc: StepConfig):
  (_, aux), grads = jax.value_and_grad(_loss, has_aux=True)(params, mb, sc)
  return grads, aux


@functools.partial(jax.jit, static_argnames=("sc",))
def micro_grads(params, mb: MicroBatch, *, sc: StepConfig):
  """(grads, aux) of the first micro-batch of an accumulation."""
  return _grads(params, mb, sc)


@functools.partial(jax.jit, static_argnames=("sc",), donate_argnames=("grads", "aux"))
def accumulate(params, grads, aux, mb: MicroBatch, *, sc: StepConfig):
  """Add one more micro-batch's gradient and metric sums to the running ones (buffers donated)."""
  g, a = _grads(params, mb, sc)
  return jax.tree.map(jnp.add, grads, g), losses.combine_aux(aux, a)


def make_apply(optimizer: optax.GradientTransformation, out_shardings=None):
  """jit of (params, opt_state, grads) -> (params, opt_state, grad_norm), donating params and state."""

  def apply(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

  kwargs = {} if out_shardings is None else {"out_shardings": (*out_shardings, None)}
  return jax.jit(apply, donate_argnums=(0, 1), **kwargs)
