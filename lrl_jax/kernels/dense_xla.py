"""Dense grouped-query attention in XLA over the SPEC §3 mask: the reference backend, and CPU training's.

Scores [batch, heads, queries, keys] and the softmax are float32; with `q_chunk` the queries go chunk by chunk under
remat (live scores [batch, heads, chunk, keys]), the last chunk padded, so any length works.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks
from lrl_jax.kernels.softmax import NEG


def _attend_dense(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None):
  """q [b, t, h, d], k/v [b, s, kh, d] → [b, t, h, d]."""
  b, t, h, d = q.shape
  kh = k.shape[2]
  qg = q.reshape(b, t, kh, h // kh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (d ** -0.5)
  allow = masks.allowed(q_tok, k_tok, mode, block_size)[:, None, None]
  scores = jnp.where(allow, scores, NEG)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None):
  """Masked GQA; with `q_chunk` queries are processed chunk by chunk (the last chunk padded, any length works)."""
  b, t, h, d = q.shape
  if not q_chunk or q_chunk >= t:
    return _attend_dense(q, k, v, q_tok, k_tok, mode, block_size)
  n = -(-t // q_chunk)
  qp = jnp.pad(q, ((0, 0), (0, n * q_chunk - t), (0, 0), (0, 0)))
  qp_tok = masks.pad_tokens(q_tok, n * q_chunk)

  def one(i):
    start = i * q_chunk
    qc = jax.lax.dynamic_slice_in_dim(qp, start, q_chunk, axis=1)
    return _attend_dense(qc, k, v, qp_tok.slice(start, q_chunk), k_tok, mode, block_size)

  chunks = jax.lax.map(jax.checkpoint(one), jnp.arange(n))  # [n, b, chunk, h, d]
  return jnp.moveaxis(chunks, 0, 1).reshape(b, n * q_chunk, h, d)[:, :t]
