"""Token log-probabilities of training rows through the `[noisy | clean]` block-diffusion layout (SPEC §3, §7.1).

Rows are right-padded, position ids count from each row's first token, and both halves share them. The
log-prob of token i is read at noisy position i: the noisy copy masks what the row's `noisy_masked` says.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.model import forward, token_logprobs
from lrl_jax.model.config import ModelConfig


def noisy_clean_inputs(tokens, noisy_masked, valid, mask_id: int):
  """Model inputs of the layout, each [rows, 2L]: tokens, positions, noisy flags, valid flags."""
  rows, length = tokens.shape
  noisy_tokens = jnp.where(noisy_masked, mask_id, tokens)
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))
  return (jnp.concatenate([noisy_tokens, tokens], 1), jnp.concatenate([positions, positions], 1),
          jnp.concatenate([jnp.ones_like(valid), jnp.zeros_like(valid)], 1).astype(bool),
          jnp.concatenate([valid, valid], 1))


def row_logprobs(params, cfg: ModelConfig, tokens, noisy_masked, valid, *, block_size: int, dtype=jnp.float32,
                 remat: str = "none", q_chunk: int | None = None, logits_chunk: int = 128):
  """(log p(token_i), entropy_i), each [rows, L] float32, read at the noisy positions of the layout.

  The mask token is excluded from the distribution, exactly as the sampler excludes it from its candidates.
  """
  length = tokens.shape[1]
  inputs, positions, noisy, both_valid = noisy_clean_inputs(tokens, noisy_masked, valid, cfg.mask_token_id)
  hidden, _ = forward(params, cfg, inputs, positions, valid=both_valid, noisy=noisy, mode="block",
                      block_size=block_size, dtype=dtype, remat=remat, q_chunk=q_chunk)
  return token_logprobs(params, cfg, hidden[:, :length], tokens, chunk=logits_chunk, banned_token=cfg.mask_token_id)


def masked_lm_loss(params, cfg: ModelConfig, tokens, noisy_masked, valid, loss_mask, *, block_size: int,
                   dtype=jnp.float32, remat: str = "none"):
  """(sum of -log p over loss_mask, count): SDAR's block-diffusion objective, exact across micro-batches."""
  logp, _ = row_logprobs(params, cfg, tokens, noisy_masked, valid, block_size=block_size, dtype=dtype, remat=remat)
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
