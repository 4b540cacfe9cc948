"""Grouped-query attention over a mask rule from `masks`; XLA implementation with optional query chunking.

Scores and softmax are float32. Query chunking bounds the live score tensor to [batch, heads, chunk, keys] so the
2L-long training layout never materialises a full [2L, 2L] score or mask tensor per head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.model import masks

_NEG = -1e30


def _attend_dense(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None):
  """q [b, t, h, d], k/v [b, s, kh, d] → [b, t, h, d]."""
  b, t, h, d = q.shape
  kh = k.shape[2]
  qg = q.reshape(b, t, kh, h // kh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (d ** -0.5)
  allow = masks.allowed(q_tok, k_tok, mode, block_size)[:, None, None]
  scores = jnp.where(allow, scores, _NEG)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None):
  """Masked GQA; with `q_chunk` (dividing the query length) queries are processed chunk by chunk."""
  t = q.shape[1]
  if not q_chunk or q_chunk >= t:
    return _attend_dense(q, k, v, q_tok, k_tok, mode, block_size)
  if t % q_chunk:
    raise ValueError(f"q_chunk={q_chunk} must divide the query length {t}")

  def one(i):
    start = i * q_chunk
    qc = jax.lax.dynamic_slice_in_dim(q, start, q_chunk, axis=1)
    return _attend_dense(qc, k, v, q_tok.slice(start, q_chunk), k_tok, mode, block_size)

  chunks = jax.lax.map(jax.checkpoint(one), jnp.arange(t // q_chunk))  # [n, b, chunk, h, d]
  return jnp.moveaxis(chunks, 0, 1).reshape(q.shape)


BACKENDS = {"xla": attend}


def register_backend(name: str, fn) -> None:
  """Add an attention implementation with `attend`'s signature (e.g. the Pallas decode kernel)."""
  BACKENDS[name] = fn
