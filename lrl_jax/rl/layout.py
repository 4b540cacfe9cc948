"""Token log-probabilities of training rows through the `[noisy | clean]` block-diffusion layout (SPEC §3, §7.1).

Rows are right-padded, position ids count from each row's first token, and both halves share them. The
log-prob of token i is read at noisy position i: the noisy copy masks what the row's `noisy_masked` says.
Improvement: the noisy copy starts at `noisy_start`, a block boundary before every masked position. A noisy block
without masked tokens is attended only by its own noisy queries, whose outputs are never read, so leaving it out
is exact; a prompt of P tokens then costs P instead of 2P positions per row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.model import forward, token_logprobs
from lrl_jax.model.config import ModelConfig


def noisy_start(noisy_masked: np.ndarray, block_size: int) -> int:
  """Where the noisy copy of rows [rows, L] may start: a block boundary at or before every masked position.

  Rounded down to a multiple of ~L/8 (whole blocks), so one row length compiles to at most 8 layouts.
  """
  length = noisy_masked.shape[1]
  cols = np.flatnonzero(np.asarray(noisy_masked).any(axis=0))
  if not len(cols):
    return 0
  quantum = block_size * max(1, length // block_size // 8)
  return int(cols[0]) // quantum * quantum


def noisy_clean_inputs(tokens, noisy_masked, valid, mask_id: int, start: int = 0):
  """Model inputs of the layout, each [rows, L - start + L]: tokens, positions, noisy flags, valid flags."""
  rows, length = tokens.shape
  noisy_tokens = jnp.where(noisy_masked, mask_id, tokens)[:, start:]
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))
  return (jnp.concatenate([noisy_tokens, tokens], 1), jnp.concatenate([positions[:, start:], positions], 1),
          jnp.concatenate([jnp.ones_like(valid[:, start:]), jnp.zeros_like(valid)], 1).astype(bool),
          jnp.concatenate([valid[:, start:], valid], 1))


def row_logprobs(params, cfg: ModelConfig, tokens, noisy_masked, valid, *, block_size: int, dtype=jnp.float32,
                 remat: str = "none", q_chunk: int | None = None, logits_chunk: int = 128, start: int = 0):
  """(log p(token_i), entropy_i), each [rows, L] float32, read at the noisy positions of the layout.

  The noisy copy covers positions start..L-1 (`noisy_start`); earlier positions read 0. The mask token is
  excluded from the distribution, exactly as the sampler excludes it from its candidates.
  """
  length = tokens.shape[1]
  inputs, positions, noisy, both_valid = noisy_clean_inputs(tokens, noisy_masked, valid, cfg.mask_token_id, start)
  hidden, _ = forward(params, cfg, inputs, positions, valid=both_valid, noisy=noisy, mode="block",
                      block_size=block_size, dtype=dtype, remat=remat, q_chunk=q_chunk)
  logp, entropy = token_logprobs(params, cfg, hidden[:, :length - start], tokens[:, start:], chunk=logits_chunk,
                                 banned_token=cfg.mask_token_id)
  return jnp.pad(logp, ((0, 0), (start, 0))), jnp.pad(entropy, ((0, 0), (start, 0)))


def masked_lm_loss(params, cfg: ModelConfig, tokens, noisy_masked, valid, loss_mask, *, block_size: int,
                   dtype=jnp.float32, remat: str = "none", start: int = 0):
  """(sum of -log p over loss_mask, count): SDAR's block-diffusion objective, exact across micro-batches."""
  logp, _ = row_logprobs(params, cfg, tokens, noisy_masked, valid, block_size=block_size, dtype=dtype, remat=remat,
                         start=start)
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
