"""Key-chunked online-softmax attention in XLA with a custom VJP: memory linear in sequence length, any backend.

Queries are processed in tiles of `q_tile`, keys in tiles of `k_tile`; the mask of each (query tile, key tile) pair
is `masks.allowed` of the tiles' token metadata, and a pair the mask leaves empty for every row is skipped
(`lax.cond`), forward and backward. The forward keeps float32 running max / sum / accumulator and returns the
log-sum-exp; the backward recomputes each tile's probabilities from it (FlashAttention-2's scheme), accumulating
dk/dv over query tiles. Live memory per step: one [batch, heads, q_tile, k_tile] float32 score tile.
Queries that may see no key at all (padding rows) get zeros and no gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lrl_jax.kernels import masks, softmax
from lrl_jax.kernels.softmax import NEG

DEFAULT_TILE = 512


def _pad_seq(x: jax.Array, length: int) -> jax.Array:
  return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _tile(x: jax.Array, i, size: int) -> jax.Array:
  return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=1)


def _scores(qc, kc, allow, scale):
  """qc [b, tq, kh, g, d], kc [b, tk, kh, d], allow [b, tq, tk] -> masked float32 scores [b, kh, g, tq, tk]."""
  return jnp.where(allow[:, None, None], _raw_scores(qc, kc, scale), NEG)


def _raw_scores(qc, kc, scale):
  """qc [b, tq, kh, g, d], kc [b, tk, kh, d] -> float32 scores [b, kh, g, tq, tk]."""
  return jnp.einsum("bqkgd,bskd->bkgqs", qc, kc, preferred_element_type=jnp.float32) * scale


def _forward(q, k, v, q_tok, k_tok, mode, block_size, tq, tk):
  """q [b, t, kh, g, d] (t a multiple of tq), k/v [b, s, kh, d] (s a multiple of tk) -> (out like q, lse [b, kh, g, t])."""
  b, t, kh, g, d = q.shape
  n_k = k.shape[1] // tk
  scale = d ** -0.5

  def q_tile(i):
    qc, qt = _tile(q, i, tq), q_tok.slice(i * tq, tq)

    def step(carry, j):
      kt = k_tok.slice(j * tk, tk)
      allow = masks.allowed(qt, kt, mode, block_size)

      def visit(state: softmax.Partial):  # acc [b, kh, g, tq, d], m/l [b, kh, g, tq]
        vc = _tile(v, j, tk)
        pv = lambda p: jnp.einsum("bkgqs,bskd->bkgqd", p.astype(vc.dtype), vc, preferred_element_type=jnp.float32)
        return softmax.fold(state, _raw_scores(qc, _tile(k, j, tk), scale), allow[:, None, None], pv)

      return jax.lax.cond(allow.any(), visit, lambda c: c, carry), None

    step = jax.checkpoint(step, prevent_cse=False)  # see `_forward`'s note on autodiff
    state, _ = jax.lax.scan(step, softmax.empty((b, kh, g, tq), d), jnp.arange(n_k))
    out = jnp.einsum("bkgqd->bqkgd", softmax.normalized(state)).astype(q.dtype)
    return out, softmax.log_sum_exp(state.m, state.l)

  # Autodiff normally stops at the custom VJP. Where a transformation inlines it (Flax's nn.scan partial-evaluates
  # its body, and partial evaluation drops custom_vjp rules), the checkpoints keep plain autodiff of these loops to
  # one query tile's carries instead of every tile's probabilities.
  out, lse = jax.lax.map(jax.checkpoint(q_tile, prevent_cse=False), jnp.arange(t // tq))
  out = jnp.moveaxis(out, 0, 1).reshape(q.shape)
  lse = jnp.moveaxis(lse, 0, -2).reshape(b, kh, g, t)
  return checkpoint_name(out, "attn_out"), checkpoint_name(lse, "attn_lse")


def _backward(q, k, v, q_tok, k_tok, out, lse, dout, mode, block_size, tq, tk):
  """Gradients (dq, dk, dv) of `_forward`'s output, tile by tile from the saved log-sum-exp."""
  b, t, kh, g, d = q.shape
  n_k = k.shape[1] // tk
  scale = d ** -0.5
  delta = jnp.einsum("bqkgd,bqkgd->bkgq", dout.astype(jnp.float32), out.astype(jnp.float32))  # rowsum(dO * O)

  def q_tile(dkv, i):
    qc, doc, qt = _tile(q, i, tq), _tile(dout, i, tq), q_tok.slice(i * tq, tq)
    lse_c = jax.lax.dynamic_slice_in_dim(lse, i * tq, tq, axis=3)
    delta_c = jax.lax.dynamic_slice_in_dim(delta, i * tq, tq, axis=3)

    def step(carry, j):
      allow = masks.allowed(qt, k_tok.slice(j * tk, tk), mode, block_size)

      def visit(carry):
        dq, dk, dv = carry
        kc, vc = _tile(k, j, tk), _tile(v, j, tk)
        p = jnp.where(allow[:, None, None], jnp.exp(_scores(qc, kc, allow, scale) - lse_c[..., None]), 0.0)
        dv_j = jnp.einsum("bkgqs,bqkgd->bskd", p.astype(doc.dtype), doc, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bqkgd,bskd->bkgqs", doc, vc, preferred_element_type=jnp.float32)
        ds = (p * (dp - delta_c[..., None]) * scale).astype(qc.dtype)
        dq = dq + jnp.einsum("bkgqs,bskd->bqkgd", ds, kc, preferred_element_type=jnp.float32)
        dk_j = jnp.einsum("bkgqs,bqkgd->bskd", ds, qc, preferred_element_type=jnp.float32)
        add = lambda acc, x: jax.lax.dynamic_update_slice_in_dim(acc, _tile(acc, j, tk) + x, j * tk, axis=1)
        return dq, add(dk, dk_j), add(dv, dv_j)

      return jax.lax.cond(allow.any(), visit, lambda c: c, carry), None

    (dq, dk, dv), _ = jax.lax.scan(step, (jnp.zeros(qc.shape, jnp.float32), *dkv), jnp.arange(n_k))
    return (dk, dv), dq.astype(q.dtype)

  zeros = jnp.zeros(k.shape, jnp.float32)
  (dk, dv), dq = jax.lax.scan(q_tile, (zeros, zeros), jnp.arange(t // tq))
  return jnp.moveaxis(dq, 0, 1).reshape(q.shape), dk.astype(k.dtype), dv.astype(v.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _flash(q, k, v, q_tok, k_tok, mode, block_size, tq, tk):
  return _forward(q, k, v, q_tok, k_tok, mode, block_size, tq, tk)[0]


def _flash_fwd(q, k, v, q_tok, k_tok, mode, block_size, tq, tk):
  out, lse = _forward(q, k, v, q_tok, k_tok, mode, block_size, tq, tk)
  return out, (q, k, v, q_tok, k_tok, out, lse)


def _flash_bwd(mode, block_size, tq, tk, res, dout):
  q, k, v, q_tok, k_tok, out, lse = res
  dq, dk, dv = _backward(q, k, v, q_tok, k_tok, out, lse, dout, mode, block_size, tq, tk)
  return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def attend(q, k, v, q_tok: masks.Tokens, k_tok: masks.Tokens, mode: str, block_size: int | None,
           q_chunk: int | None = None, *, k_chunk: int | None = None):
  """`dense_xla.attend` with memory linear in length: q [b, t, h, d], k/v [b, s, kh, d] -> [b, t, h, d].

  Query tiles of `q_chunk` (default 512) and key tiles of `k_chunk` (default: the query tile), each capped at the
  length; any t and s work (tiles are padded with invalid tokens, padded queries are dropped).
  """
  b, t, h, d = q.shape
  s, kh = k.shape[1], k.shape[2]
  tq = min(q_chunk or DEFAULT_TILE, t)
  tk = min(k_chunk or q_chunk or DEFAULT_TILE, s)
  t_pad, s_pad = -(-t // tq) * tq, -(-s // tk) * tk
  qg = _pad_seq(q, t_pad).reshape(b, t_pad, kh, h // kh, d)
  out = _flash(qg, _pad_seq(k, s_pad), _pad_seq(v, s_pad), masks.pad_tokens(q_tok, t_pad),
               masks.pad_tokens(k_tok, s_pad), mode, block_size, tq, tk)
  return out.reshape(b, t_pad, h, d)[:, :t]
