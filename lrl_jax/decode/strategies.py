"""Which masked positions a denoising step fills (SPEC §4.3-4.4); every function works on [batch, block] arrays."""

from __future__ import annotations

import jax.numpy as jnp

from lrl_jax.decode.config import DecodeConfig


def schedule(block_size: int, steps: int, step: jnp.ndarray) -> jnp.ndarray:
  """n_s [b]: tokens step `step` [b] must at least fill (SPEC §4.3): B // S, one more in the first B % S steps.

  The same for every block, a partly filled first block too (as the authors' decoders); `select` fills at most
  the masked positions left, so such a block may finish in fewer steps.
  """
  return block_size // steps + (step < block_size % steps).astype(jnp.int32)


def _rank(score: jnp.ndarray, masked: jnp.ndarray) -> jnp.ndarray:
  """Rank [b, t] of each masked position by descending score (ties: leftmost first); unmasked rank last."""
  key = jnp.where(masked, score, -jnp.inf)
  order = jnp.argsort(-key, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True)


def _top_n(score, masked, n):
  return masked & (_rank(score, masked) < n[:, None])


def select(strategy: str, masked, prob, entropy, n, cfg: DecodeConfig, threshold=None):
  """Boolean [b, t] positions to fill. masked/prob/entropy: [b, t]; n: [b] minimum count n_s; `threshold`: θ as
  a runtime value (the engine's, so one compiled program serves every θ), default `cfg.threshold`.

  Every strategy fills at least n_s, so a block always finishes within its S steps (entropy_bounded: the
  budget may admit more, never fewer than max(1, n_s)).
  """
  if strategy == "sequential":
    return masked & (jnp.cumsum(masked, axis=-1) <= n[:, None])
  if strategy == "low_confidence_static":
    return _top_n(prob, masked, n)
  if strategy == "low_confidence_dynamic":
    confident = masked & (prob > (cfg.threshold if threshold is None else threshold))
    enough = confident.sum(-1) >= n
    return jnp.where(enough[:, None], confident, _top_n(prob, masked, n))
  if strategy == "entropy_bounded":
    rank = _rank(-entropy, masked)  # lowest entropy first
    order = jnp.argsort(rank, axis=-1)
    sorted_entropy = jnp.take_along_axis(jnp.where(masked, entropy, jnp.inf), order, -1)
    within = (jnp.cumsum(sorted_entropy, -1) <= cfg.entropy_budget).sum(-1)
    count = jnp.minimum(jnp.maximum(within, jnp.maximum(n, 1)), masked.sum(-1))
    return masked & (rank < count[:, None])
  raise ValueError(f"unknown strategy {strategy!r}")
