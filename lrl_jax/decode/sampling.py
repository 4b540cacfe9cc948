"""Candidate tokens for masked positions: temperature → top-k → top-p → categorical draw, or greedy (SPEC §4.2).

Each sequence draws from its own key, so a sequence's samples depend only on its key and its own step count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.decode.config import DecodeConfig


def filtered_log_probs(logits: jax.Array, cfg: DecodeConfig) -> jax.Array:
  """log-probabilities [..., vocab] of the sampling distribution (greedy: the plain softmax)."""
  logits = logits.astype(jnp.float32)
  if cfg.is_greedy:
    return jax.nn.log_softmax(logits, -1)
  logits = logits / cfg.temperature
  if cfg.top_k and cfg.top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if cfg.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, -1)
    # keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p
    before = jnp.cumsum(sorted_probs, -1) - sorted_probs
    cutoff = jnp.min(jnp.where(before < cfg.top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.nn.log_softmax(logits, -1)


def candidates(logits: jax.Array, keys: jax.Array, cfg: DecodeConfig, with_entropy: bool = False):
  """Per position: token x̂, its probability p̂, log p̂ and (optionally) the entropy. logits [b, t, vocab], keys [b]."""
  logp = filtered_log_probs(logits, cfg)
  if cfg.is_greedy:
    tokens = jnp.argmax(logp, -1)
  else:
    tokens = jax.vmap(lambda k, lp: jax.random.categorical(k, lp, axis=-1))(keys, logp)
  tok_logp = jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
  entropy = None
  if with_entropy:
    p = jnp.exp(logp)
    entropy = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), -1)
  return tokens.astype(jnp.int32), jnp.exp(tok_logp), tok_logp, entropy
