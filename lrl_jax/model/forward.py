"""The SDAR forward pass as a pure function of a params pytree, through the Flax module `layers.SDAR`.

One `forward` serves every use: the block-diffusion training layout `[noisy | clean]`, plain causal attention, and
decoding calls that read a paged KV cache (`PagedKV`: clean blocks before the call, all visible) and optionally
return their own keys/values for the caller to write (prefill, commit). The cache is never written here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks
from lrl_jax.model.config import ModelConfig
from lrl_jax.model.layers import KV, SDAR, PagedKV
from lrl_jax.model.moe import RouterStats


class ForwardOut(NamedTuple):
  """hidden [batch, len, embed] after the final norm; kv: the call's own per-layer keys/values (or None)."""
  hidden: jax.Array
  kv: KV | None


class RoutedOut(NamedTuple):
  """A forward's output and the router statistics of its MoE layers ([layers, experts] sums over valid tokens)."""
  out: ForwardOut
  router: RouterStats


def forward(params: dict, cfg: ModelConfig, tokens: jax.Array, positions: jax.Array, *,
            valid: jax.Array | None = None, noisy: jax.Array | None = None, mode: str = "block",
            block_size: int | None = None, dtype: Any = jnp.float32, remat: str = "none", attn_impl: str = "xla",
            q_chunk: int | None = None, prefix: PagedKV | None = None, return_kv: bool = False,
            prefix_chunk: int = 8, router_stats: bool = False,
            counted: jax.Array | None = None) -> ForwardOut | RoutedOut:
  """`SDAR.apply` on params: tokens/positions/valid/noisy [batch, len] → ForwardOut.

  Keys are the call's own tokens under the `mode` rule (`masks.allowed`), plus every cached position of `prefix`
  (read `prefix_chunk` pages at a time on the XLA path). Position ids are explicit, so padding never shifts the
  block grid. `router_stats` (MoE models): return a `RoutedOut` that adds each layer's `moe.RouterStats` over the
  tokens `counted` [batch, len] marks (default `valid`; a layout may attend tokens that are not its own).
  """
  block_size = block_size or cfg.block_size
  if mode == "block" and not block_size:
    raise ValueError("block mode needs a block_size (argument or config.json 'block_size')")
  q_tok = masks.make_tokens(positions, valid, noisy)
  model = SDAR(cfg, dtype=dtype, mode=mode, block_size=block_size, attn_impl=attn_impl, q_chunk=q_chunk, remat=remat,
               return_kv=return_kv, prefix_chunk=prefix_chunk)
  if not router_stats:
    hidden, kv = model.apply({"params": params}, tokens, q_tok, prefix)
    return ForwardOut(hidden, kv)
  if not cfg.is_moe:
    raise ValueError("router_stats needs a mixture-of-experts model (num_experts > 0)")
  (hidden, kv), state = model.apply({"params": params}, tokens, q_tok, prefix, counted, mutable=["intermediates"])
  (stats,) = state["intermediates"]["layers"]["router"]
  return RoutedOut(ForwardOut(hidden, kv), stats)


def lm_head(params: dict, cfg: ModelConfig) -> jax.Array:
  """[embed, vocab] output projection (the transposed embedding when tied)."""
  return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def logits(params: dict, cfg: ModelConfig, hidden: jax.Array) -> jax.Array:
  """float32 logits [..., vocab] of hidden states [..., embed]."""
  w = lm_head(params, cfg).astype(hidden.dtype)
  return jnp.einsum("...e,ev->...v", hidden, w, preferred_element_type=jnp.float32)


def gather(hidden: jax.Array, index: jax.Array) -> jax.Array:
  """hidden [b, t, e] at index [b, n] → [b, n, e]."""
  return jnp.take_along_axis(hidden, index[..., None], axis=1)


def token_logprobs(params: dict, cfg: ModelConfig, hidden: jax.Array, targets: jax.Array, chunk: int = 128,
                   banned_token: int | None = None):
  """log p(target) and entropy, each [b, n], from hidden [b, n, e], vocab-wide log-softmax in float32.

  Works `chunk` positions at a time under remat, so neither the forward nor the backward pass holds more than
  [b, chunk, vocab] logits. `banned_token` (the mask token) is excluded from the distribution, as in decoding.
  """
  b, n, e = hidden.shape
  chunk = min(chunk, n)
  pad = (-n) % chunk
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))

  @jax.checkpoint
  def one(args):
    h, t = args  # [b, chunk, e], [b, chunk]
    lg = logits(params, cfg, h)
    if banned_token is not None:
      lg = lg.at[..., banned_token].set(-jnp.inf)
    logp = jax.nn.log_softmax(lg, axis=-1)
    picked = jnp.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.where(jnp.isfinite(logp), jnp.exp(logp) * logp, 0.0), axis=-1)
    return picked, entropy

  hs = hidden.reshape(b, -1, chunk, e).swapaxes(0, 1)
  ts = targets.reshape(b, -1, chunk).swapaxes(0, 1)
  picked, entropy = jax.lax.map(one, (hs, ts))
  unchunk = lambda a: a.swapaxes(0, 1).reshape(b, -1)[:, :n]
  return unchunk(picked), unchunk(entropy)
