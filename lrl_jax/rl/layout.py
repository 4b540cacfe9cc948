"""Token log-probabilities of training rows through the `[noisy | clean]` block-diffusion layout (SPEC §3, §7.1).

Rows are right-padded, position ids count from each row's first token, and both halves share them. The
log-prob of token i is read at noisy position i: the noisy copy masks what the row's `noisy_masked` says.
Improvement: each row's noisy copy is a window of N positions starting at its own block boundary before its first
masked position, so the layout is `[noisy window (N) | clean row (L)]`. A noisy block without masked tokens is
attended only by its own noisy queries, whose outputs are never read, so leaving it out is exact; a prompt of P
tokens then costs about P instead of 2P positions per row. N comes from the row-length buckets, so the compiled
shape depends on the bucketed (L, N) only, never on where a batch's prompts end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.model import forward, token_logprobs
from lrl_jax.model.config import ModelConfig
from lrl_jax.rl.batch import length_bucket


def noisy_start(noisy_masked: np.ndarray, block_size: int, multiple: int = 0) -> int:
  """Static crop of rows [rows, L]: the layout's noisy window holds N = L - crop positions (bucketed like rows).

  Each row's window starts at the block boundary before its first masked position (`row_starts`) and must reach
  the end of the block of its last masked position; N is the bucket (`batch.length_bucket`) of the widest such
  span, at most L. Rows with nothing masked need no window.
  """
  masked = np.asarray(noisy_masked, bool)
  length = masked.shape[1]
  live = masked.any(axis=1)
  if not live.any():
    return length - min(length, block_size)
  first = np.argmax(masked[live], axis=1) // block_size * block_size
  last = length - np.argmax(masked[live, ::-1], axis=1)  # one past the last masked position
  span = int(np.max(np.minimum(-(-last // block_size) * block_size, length) - first))
  return length - min(length, length_bucket(span, block_size, multiple))


def row_starts(noisy_masked: jax.Array, block_size: int) -> jax.Array:
  """[rows] int32: the block boundary at or before each row's first masked position (0 when none is masked)."""
  return (jnp.argmax(noisy_masked, axis=1) // block_size * block_size).astype(jnp.int32)


def noisy_clean_inputs(tokens, noisy_masked, valid, mask_id: int, block_size: int, start: int = 0):
  """Model inputs of the layout, each [rows, N + L] with N = L - start: tokens, positions, noisy flags, valid flags.

  Also returns the window's positions [rows, N] (row start + 0..N-1; past L they are invalid and read nothing).
  """
  rows, length = tokens.shape
  window = row_starts(noisy_masked, block_size)[:, None] + jnp.arange(length - start, dtype=jnp.int32)
  inside = window < length
  at = jnp.minimum(window, length - 1)
  noisy_tokens = jnp.where(jnp.take_along_axis(noisy_masked, at, 1), mask_id, jnp.take_along_axis(tokens, at, 1))
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))
  return (jnp.concatenate([noisy_tokens, tokens], 1), jnp.concatenate([window, positions], 1),
          jnp.concatenate([jnp.ones_like(inside), jnp.zeros_like(valid, bool)], 1),
          jnp.concatenate([inside, valid.astype(bool)], 1), window)


def row_logprobs(params, cfg: ModelConfig, tokens, noisy_masked, valid, *, block_size: int, dtype=jnp.float32,
                 remat: str = "none", q_chunk: int | None = None, logits_chunk: int = 128, start: int = 0,
                 attn_impl: str = "xla", router_stats: bool = False):
  """(log p(token_i), entropy_i), each [rows, L] float32, read at the noisy positions of the layout; with
  `router_stats` (MoE models) a third item, the forward's `moe.RouterStats` ([layers, experts] sums) over both
  copies of the rows' valid tokens: not over the noisy window's positions past a row's end (nor a padding row's
  window), which the window attends but which are no row's tokens: padding rows add nothing.

  Positions outside a row's noisy window (`start` = `noisy_start`) read 0. The mask token is excluded from the
  distribution, exactly as the sampler excludes it from its candidates.
  """
  length = tokens.shape[1]
  n = length - start
  inputs, positions, noisy, both_valid, window = noisy_clean_inputs(tokens, noisy_masked, valid, cfg.mask_token_id,
                                                                    block_size, start)
  counted = None
  if router_stats:
    real = (window < length) & jnp.take_along_axis(valid.astype(bool), jnp.minimum(window, length - 1), 1)
    counted = jnp.concatenate([real, valid.astype(bool)], 1)
  out = forward(params, cfg, inputs, positions, valid=both_valid, noisy=noisy, mode="block", block_size=block_size,
                dtype=dtype, remat=remat, q_chunk=q_chunk, attn_impl=attn_impl, router_stats=router_stats,
                counted=counted)
  hidden = out.out.hidden if router_stats else out.hidden
  targets = jnp.take_along_axis(tokens, jnp.minimum(window, length - 1), 1)
  logp, entropy = token_logprobs(params, cfg, hidden[:, :n], targets, chunk=logits_chunk,
                                 banned_token=cfg.mask_token_id)
  offset = jnp.arange(length, dtype=jnp.int32) - window[:, :1]  # [rows, L]: index of position i in the window
  inside = (offset >= 0) & (offset < n)
  at = jnp.clip(offset, 0, n - 1)
  unwindow = lambda a: jnp.where(inside, jnp.take_along_axis(a, at, 1), 0.0)
  if router_stats:
    return unwindow(logp), unwindow(entropy), out.router
  return unwindow(logp), unwindow(entropy)


def masked_lm_loss(params, cfg: ModelConfig, tokens, noisy_masked, valid, loss_mask, *, block_size: int,
                   dtype=jnp.float32, remat: str = "none", start: int = 0, q_chunk: int | None = None,
                   attn_impl: str = "xla"):
  """(sum of -log p over loss_mask, count): SDAR's block-diffusion objective, exact across micro-batches."""
  logp, _ = row_logprobs(params, cfg, tokens, noisy_masked, valid, block_size=block_size, dtype=dtype, remat=remat,
                         start=start, q_chunk=q_chunk, attn_impl=attn_impl)
  mask = loss_mask & valid
  return -jnp.sum(jnp.where(mask, logp, 0.0)), jnp.sum(mask)


def random_block_masks(key: jax.Array, maskable, block_size: int, max_rate: float = 1.0) -> jax.Array:
  """SDAR training noise: per row and block a mask rate t ~ U(0, max_rate], each maskable token masked with prob t."""
  rows, length = maskable.shape
  k_rate, k_tok = jax.random.split(key)
  blocks = -(-length // block_size)
  rate = max_rate * (1.0 - jax.random.uniform(k_rate, (rows, blocks)))  # (0, max_rate]
  per_token = jnp.repeat(rate, block_size, axis=1)[:, :length]
  return maskable & (jax.random.uniform(k_tok, (rows, length)) < per_token)
