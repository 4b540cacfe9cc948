"""The one place attention masks are defined (SPEC §3), from per-token metadata rather than dense matrices.

Every query/key carries its position id, whether it belongs to the noisy copy, and whether it is real (not padding).
`allowed` evaluates the rule for any [queries] × [keys] tile, so attention backends can build masks chunk by chunk.
It lives with the kernels, which evaluate it per tile; the model builds `Tokens` and hands them down.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MASK_MODES = ("causal", "block")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Tokens:
  """Per-token metadata of a sequence batch: positions/noisy/valid, each [batch, len]."""

  positions: jax.Array
  noisy: jax.Array
  valid: jax.Array

  def slice(self, start: int, size: int) -> "Tokens":
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size, axis=1), self)


def make_tokens(positions: jax.Array, valid: jax.Array | None = None, noisy: jax.Array | None = None) -> Tokens:
  """Metadata with defaults: every token real, none noisy."""
  valid = jnp.ones(positions.shape, bool) if valid is None else valid.astype(bool)
  noisy = jnp.zeros(positions.shape, bool) if noisy is None else noisy.astype(bool)
  return Tokens(positions.astype(jnp.int32), noisy, valid)


def pad_tokens(tok: Tokens, length: int) -> Tokens:
  """Metadata padded on the right to `length` with invalid, clean tokens at position 0 (whole tiles for a kernel)."""
  extra = length - tok.positions.shape[1]
  return jax.tree.map(lambda a: jnp.pad(a, ((0, 0), (0, extra))), tok)


def allowed(q: Tokens, k: Tokens, mode: str, block_size: int | None) -> jax.Array:
  """[batch, q_len, k_len] bool: may query i attend to key j (SPEC §3)?

  causal: key position <= query position among clean tokens.
  block: clean queries see clean keys of blocks <= their own; noisy queries see noisy keys of their own block and
  clean keys of earlier blocks. Padding keys are never attended.
  """
  k_valid = k.valid[:, None, :]
  k_noisy = k.noisy[:, None, :]
  if mode == "causal":
    return k_valid & ~k_noisy & (k.positions[:, None, :] <= q.positions[:, :, None])
  if mode != "block":
    raise ValueError(f"unknown mask mode {mode!r}; expected one of {MASK_MODES}")
  qb = (q.positions // block_size)[:, :, None]
  kb = (k.positions // block_size)[:, None, :]
  q_noisy = q.noisy[:, :, None]
  clean_rule = ~k_noisy & (kb <= qb)
  noisy_rule = (k_noisy & (kb == qb)) | (~k_noisy & (kb < qb))
  return k_valid & jnp.where(q_noisy, noisy_rule, clean_rule)
