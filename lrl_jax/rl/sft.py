"""The warm start's pure pieces (SDAR's block-diffusion objective, supervised): its rows and its compiled step.

Rows are prompt + reference response + `<|im_end|>`, padded with `<|endoftext|>` to the end of the block (the
sampler decodes whole blocks, so the tail after the stop is trained too). Each step masks response tokens at a
random per-block rate and trains log p of the masked tokens (SPEC §3 layout). The loop is lrl_jax/run/warm_start.py.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrl_jax.rl import layout
from lrl_jax.rl.batch import length_bucket


class SftRows(NamedTuple):
  """The warm start's rows, L bucketed to whole blocks: tokens, valid and maskable (the response part), all [n, L]."""
  tokens: np.ndarray
  valid: np.ndarray
  maskable: np.ndarray


def sft_rows(prompts: list[list[int]], responses: list[list[int]], block_size: int, pad_id: int) -> SftRows:
  """Rows of prompt + padded response (module docstring)."""
  seqs = []
  for p, r in zip(prompts, responses):
    total = -(-(len(p) + len(r)) // block_size) * block_size
    seqs.append((p, r + [pad_id] * (total - len(p) - len(r))))
  length = length_bucket(max(len(p) + len(r) for p, r in seqs), block_size)
  tokens = np.full((len(seqs), length), pad_id, np.int32)
  valid = np.zeros((len(seqs), length), bool)
  maskable = np.zeros((len(seqs), length), bool)
  for i, (p, r) in enumerate(seqs):
    tokens[i, :len(p) + len(r)] = p + r
    valid[i, :len(p) + len(r)] = True
    maskable[i, len(p):len(p) + len(r)] = True
  return SftRows(tokens, valid, maskable)


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer", "block_size", "dtype", "max_rate", "start"),
                   donate_argnums=(0, 1))
def sft_step(params, opt_state, key, tokens, valid, maskable, *, cfg, optimizer, block_size, dtype, max_rate,
             start=0):
  """One optimizer step on the masked-token NLL (mean over masked tokens); `start`: layout.noisy_start."""
  noisy = layout.random_block_masks(key, maskable, block_size, max_rate)

  def loss_fn(p):
    total, count = layout.masked_lm_loss(p, cfg, tokens, noisy, valid, noisy, block_size=block_size,
                                         dtype=jnp.dtype(dtype), start=start)
    return total / jnp.maximum(count, 1)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss
