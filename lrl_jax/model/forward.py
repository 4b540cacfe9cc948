"""The SDAR forward pass as pure functions over a params pytree.

One `forward` serves every use: the block-diffusion training layout `[noisy | clean]`, prefill/decode against a
preallocated KV cache (prefill/commit calls write their keys/values, then attend over the cache; denoising calls
only read it), and plain causal attention. Layers run under `lax.scan`; RMSNorm, softmax and log-softmax are float32.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from lrl_jax.model import attention, masks, remat as remat_lib
from lrl_jax.model.axes import constrain
from lrl_jax.model.config import ModelConfig



def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """RMSNorm in float32, result cast back to x's dtype before the weight (as HF Qwen3 does)."""
  xf = x.astype(jnp.float32)
  xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * xf.astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding (rotate-half convention): x [b, t, heads, d], positions [b, t]."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, d/2]
  cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, :, None, :]
  sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x.astype(jnp.float32) * cos + rotated * sin).astype(x.dtype)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
  """Preallocated KV cache: slot s of row b holds position s. k/v: [layers, batch, length, kv_heads, head_dim]."""
  shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def _write_cache(cache: jax.Array, layer: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
  """Write new [b, t, kh, d] into cache [layers, b, s, kh, d] at (layer, row b, slots start[b]..)."""
  write_row = lambda c, u, p: jax.lax.dynamic_update_slice(c, u[None], (layer, p, 0, 0))
  return jax.vmap(write_row, in_axes=(1, 0, 0), out_axes=1)(cache, new, start)


def _layer(cfg: ModelConfig, x, lp, q_tok, k_tok, cache_kv, layer_idx, mode, block_size, attn_impl, q_chunk,
           cache_write):
  """One pre-norm decoder layer. x [b, t, e]; returns (x, updated cache_kv or None)."""
  dt = x.dtype
  w = lambda name: lp[name].astype(dt)
  h = rms_norm(x, lp["input_norm"], cfg.rms_norm_eps)
  q = jnp.einsum("bte,ehd->bthd", h, w("q_proj"))
  k = jnp.einsum("bte,ehd->bthd", h, w("k_proj"))
  v = jnp.einsum("bte,ehd->bthd", h, w("v_proj"))
  if cfg.attention_bias:
    q, k, v = q + w("q_bias"), k + w("k_bias"), v + w("v_bias")
  q = rope(rms_norm(q, lp["q_norm"], cfg.rms_norm_eps), q_tok.positions, cfg.rope_theta)
  k = rope(rms_norm(k, lp["k_norm"], cfg.rms_norm_eps), q_tok.positions, cfg.rope_theta)
  q = constrain(q, ("batch", "seq", "heads", "head_dim"))
  k = constrain(k, ("batch", "seq", "kv_heads", "head_dim"))
  if cache_kv is not None and cache_write:
    start = q_tok.positions[:, 0]
    cache_kv = {"k": _write_cache(cache_kv["k"], layer_idx, k.astype(cache_kv["k"].dtype), start),
                "v": _write_cache(cache_kv["v"], layer_idx, v.astype(cache_kv["v"].dtype), start)}
    k = cache_kv["k"][layer_idx].astype(dt)
    v = cache_kv["v"][layer_idx].astype(dt)
  elif cache_kv is not None:  # read-only: own keys first, then the cache (see masks.call_then_cache_tokens)
    k = jnp.concatenate([k, cache_kv["k"][layer_idx].astype(dt)], axis=1)
    v = jnp.concatenate([v, cache_kv["v"][layer_idx].astype(dt)], axis=1)
  attn = attention.BACKENDS[attn_impl](q, k, v, q_tok, k_tok, mode, block_size, q_chunk)
  attn = jnp.einsum("bthd,hde->bte", attn, w("o_proj"))
  if cfg.attention_bias:
    attn = attn + w("o_bias")
  x = constrain(x + attn, ("batch", "seq", "embed"))
  h = rms_norm(x, lp["post_attn_norm"], cfg.rms_norm_eps)
  gate = jnp.einsum("bte,em->btm", h, w("gate_proj"))
  up = jnp.einsum("bte,em->btm", h, w("up_proj"))
  mlp = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "mlp"))
  x = constrain(x + jnp.einsum("btm,me->bte", mlp, w("down_proj")), ("batch", "seq", "embed"))
  return x, cache_kv


def forward(params: dict, cfg: ModelConfig, tokens: jax.Array, positions: jax.Array, *,
            valid: jax.Array | None = None, noisy: jax.Array | None = None, mode: str = "block",
            block_size: int | None = None, cache: dict | None = None, dtype: Any = jnp.float32,
            remat: str = "none", attn_impl: str = "xla", q_chunk: int | None = None, cache_write: bool = True):
  """Final-norm hidden states [batch, len, embed] (in `dtype`) and the updated cache (None without one).

  tokens/positions/valid/noisy: [batch, len]. Without a cache, keys are these tokens under the `mode` rule
  (`masks.allowed`). With a cache, each row's tokens must be contiguous positions. `cache_write`: their keys/values
  are written at those slots and queries attend over the whole cache (invalid tokens are written too but are never
  inside a real query's blocks) — prefill and commit. Otherwise queries attend over their own keys plus the cache
  slots before the row's first position, and the cache comes back unchanged — a denoising forward, whose block
  changes before it is committed. Position ids are explicit, so padding never shifts the block grid.
  """
  block_size = block_size or cfg.block_size
  if mode == "block" and not block_size:
    raise ValueError("block mode needs a block_size (argument or config.json 'block_size')")
  q_tok = masks.make_tokens(positions, valid, noisy)
  if cache is None:
    k_tok = q_tok
  elif cache_write:
    k_tok = masks.cache_tokens(q_tok, cache["k"].shape[2])
  else:
    k_tok = masks.call_then_cache_tokens(q_tok, cache["k"].shape[2])
  x = constrain(params["embed"].astype(dtype)[tokens], ("batch", "seq", "embed"))

  layer_fn = functools.partial(_layer, cfg, mode=mode, block_size=block_size, attn_impl=attn_impl, q_chunk=q_chunk,
                               cache_write=cache_write)
  policy = remat_lib.policy(remat)

  def body(carry, xs):
    x, kv = carry
    lp, idx = xs
    return layer_fn(x, lp, q_tok, k_tok, kv, idx), None

  if remat != "none":
    body = jax.checkpoint(body, policy=policy, prevent_cse=False)
  (x, cache), _ = jax.lax.scan(body, (x, cache), (params["layers"], jnp.arange(cfg.num_layers)))
  return rms_norm(x, params["final_norm"], cfg.rms_norm_eps), cache


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
