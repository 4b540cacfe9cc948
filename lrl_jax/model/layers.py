"""The SDAR network as Flax linen modules: a pre-norm Qwen3 decoder layer and the layer stack.

Parameters are created with logical axis names (`nn.with_logical_partitioning`) and keep the names of the params
pytree that maps one-to-one to the HF tensors (SPEC §2, `weights/hf.py`): `embed`, `final_norm`, `lm_head` and the
stacked `layers/*` (a leading `layers` axis from `nn.scan`). Activations carry logical names through
`nn.with_logical_constraint`, a no-op unless `parallel.activate` set a mesh and rules.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrl_jax.kernels import masks
from lrl_jax.model import attention, moe, moe_dispatch, remat as remat_lib
from lrl_jax.model.config import ModelConfig


class PagedKV(NamedTuple):
  """Cached keys/values a call reads: clean blocks before the call, all visible to its queries (never written).

  Page `page_table[b, i]` of the pool holds positions `i*page .. i*page+page-1` of row b; slots at or after
  `length[b]` are stale. A contiguous cache [layers, batch, slots, ...] is the special case of one row per page run.
  """
  k: jax.Array  # [layers, pages, page, kv_heads, head_dim]
  v: jax.Array  # [layers, pages, page, kv_heads, head_dim]
  page_table: jax.Array  # [batch, pages_per_row] int32
  length: jax.Array  # [batch] int32, cached positions of each row


class KV(NamedTuple):
  """Keys/values a call computed for its own tokens, per layer, for the caller to write into its cache."""
  k: jax.Array  # [layers, batch, len, kv_heads, head_dim]
  v: jax.Array


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, weight_fp32: bool = True) -> jax.Array:
  """RMSNorm in float32. weight_fp32=False: cast to x's dtype, then the weight (transformers' Qwen3);
  True: the weight too in float32, one cast at the end (the SDAR authors' fused kernel, SGLang). Same in float32."""
  xf = x.astype(jnp.float32)
  xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  if weight_fp32:
    return (weight.astype(jnp.float32) * xf).astype(x.dtype)
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


def _normal(std: float, dtype):
  return lambda key, shape: (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def _ones(dtype):
  return lambda key, shape: jnp.ones(shape, dtype)


def _zeros(dtype):
  return lambda key, shape: jnp.zeros(shape, dtype)


class DecoderLayer(nn.Module):
  """One pre-norm decoder layer: x [b, t, e] → (x, this call's (k, v) [b, t, kh, d] if `return_kv`)."""

  cfg: ModelConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  init_std: float = 0.02
  mode: str = "block"
  block_size: int | None = None
  attn_impl: str = "xla"
  q_chunk: int | None = None
  return_kv: bool = False
  prefix_chunk: int = 8

  def _param(self, name: str, shape: tuple, axes: tuple, init) -> jax.Array:
    value = self.param(name, nn.with_logical_partitioning(init(self.param_dtype), axes), shape)
    return jnp.asarray(value).astype(self.dtype)

  @nn.compact
  def __call__(self, x, q_tok: masks.Tokens, prefix: PagedKV | None, counted: jax.Array | None, layer: jax.Array):
    cfg = self.cfg
    e, h, kh, d, m = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    weight = lambda name, shape, axes: self._param(name, shape, axes, lambda pd: _normal(self.init_std, pd))
    norm = lambda name, size, axis: self.param(name, nn.with_logical_partitioning(_ones(self.param_dtype), (axis,)),
                                               (size,))
    bias = lambda name, shape, axes: self._param(name, shape, axes, _zeros)

    hidden = rms_norm(x, norm("input_norm", e, "embed"), cfg.rms_norm_eps, cfg.norm_weight_fp32)
    q = jnp.einsum("bte,ehd->bthd", hidden, weight("q_proj", (e, h, d), ("embed", "heads", "head_dim")))
    k = jnp.einsum("bte,ehd->bthd", hidden, weight("k_proj", (e, kh, d), ("embed", "kv_heads", "head_dim")))
    v = jnp.einsum("bte,ehd->bthd", hidden, weight("v_proj", (e, kh, d), ("embed", "kv_heads", "head_dim")))
    if cfg.attention_bias:
      q = q + bias("q_bias", (h, d), ("heads", "head_dim"))
      k = k + bias("k_bias", (kh, d), ("kv_heads", "head_dim"))
      v = v + bias("v_bias", (kh, d), ("kv_heads", "head_dim"))
    eps, w32 = cfg.rms_norm_eps, cfg.norm_weight_fp32
    q = rope(rms_norm(q, norm("q_norm", d, "head_dim"), eps, w32), q_tok.positions, cfg.rope_theta)
    k = rope(rms_norm(k, norm("k_norm", d, "head_dim"), eps, w32), q_tok.positions, cfg.rope_theta)
    q = nn.with_logical_constraint(q, ("batch", "seq", "heads", "head_dim"))
    k = nn.with_logical_constraint(k, ("batch", "seq", "kv_heads", "head_dim"))
    if prefix is None:
      attn = attention.backend(self.attn_impl)(q, k, v, q_tok, q_tok, self.mode, self.block_size, self.q_chunk)
    else:  # a decoding call: own window + the row's cached pages (attn_impl picks how the pages are read)
      impl = "pallas" if self.attn_impl == "pallas" else "xla"
      attn = attention.paged_attend(q, k, v, q_tok, prefix.k, prefix.v, prefix.page_table, prefix.length, self.mode,
                                    self.block_size, self.prefix_chunk, impl, layer=layer)
    attn = jnp.einsum("bthd,hde->bte", attn, weight("o_proj", (h, d, e), ("heads", "head_dim", "embed")))
    if cfg.attention_bias:
      attn = attn + bias("o_bias", (e,), ("embed",))
    x = nn.with_logical_constraint(x + attn, ("batch", "seq", "embed"))

    hidden = rms_norm(x, norm("post_attn_norm", e, "embed"), cfg.rms_norm_eps, cfg.norm_weight_fp32)
    if cfg.is_moe:
      down = self._sparse_mlp(hidden, q_tok.valid if counted is None else counted, weight)
    else:
      gate = jnp.einsum("bte,em->btm", hidden, weight("gate_proj", (e, m), ("embed", "mlp")))
      up = jnp.einsum("bte,em->btm", hidden, weight("up_proj", (e, m), ("embed", "mlp")))
      mlp = nn.with_logical_constraint(jax.nn.silu(gate) * up, ("batch", "seq", "mlp"))
      down = jnp.einsum("btm,me->bte", mlp, weight("down_proj", (m, e), ("mlp", "embed")))
    x = nn.with_logical_constraint(x + down, ("batch", "seq", "embed"))
    return x, ((k, v) if self.return_kv else None)


  def _sparse_mlp(self, hidden, valid, weight):
    """The MoE block (`moe.sparse_mlp`, tokens dispatched to the experts' shards by `moe_dispatch`); its router
    statistics are sown into "intermediates" (kept when mutable)."""
    cfg = self.cfg
    e, m = cfg.hidden_size, cfg.moe_intermediate_size
    x = moe_dispatch.local_experts(cfg.num_experts)  # this shard's experts inside a shard_map over `expert`
    out, stats = moe.sparse_mlp(hidden, valid, weight("router", (e, cfg.num_experts), ("embed", None)),
                                weight("expert_gate", (x, e, m), ("expert", "embed", "mlp")),
                                weight("expert_up", (x, e, m), ("expert", "embed", "mlp")),
                                weight("expert_down", (x, m, e), ("expert", "mlp", "embed")),
                                cfg.num_experts_per_tok, cfg.norm_topk_prob, experts=moe_dispatch.experts)
    self.sow("intermediates", "router", stats)
    return out


class SDAR(nn.Module):
  """Embedding → `num_layers` scanned (optionally rematerialised) decoder layers → final RMSNorm.

  `__call__` returns the final-norm hidden states [b, t, e] and, with `return_kv`, the per-layer `KV` of the call's
  own tokens ([layers, b, t, kh, d] each). The untied `lm_head` [embed, vocab] is a parameter read by `forward.logits`.
  """

  cfg: ModelConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  init_std: float = 0.02
  mode: str = "block"
  block_size: int | None = None
  attn_impl: str = "xla"
  q_chunk: int | None = None
  remat: str = "none"
  return_kv: bool = False
  prefix_chunk: int = 8  # pages per step of the paged-prefix walk (XLA path)

  @nn.compact
  def __call__(self, tokens, q_tok: masks.Tokens, prefix: PagedKV | None = None, counted: jax.Array | None = None):
    cfg = self.cfg
    e, v = cfg.hidden_size, cfg.vocab_size
    embed = self.param("embed", nn.with_logical_partitioning(_normal(self.init_std, self.param_dtype),
                                                             ("vocab", "embed")), (v, e))
    if not cfg.tie_word_embeddings:
      self.param("lm_head", nn.with_logical_partitioning(_normal(self.init_std, self.param_dtype), ("embed", "vocab")),
                 (e, v))
    final_norm = self.param("final_norm", nn.with_logical_partitioning(_ones(self.param_dtype), ("embed",)), (e,))
    x = nn.with_logical_constraint(jnp.asarray(embed).astype(self.dtype)[tokens], ("batch", "seq", "embed"))

    layer = DecoderLayer
    policy = remat_lib.policy(self.remat)
    if self.remat != "none":
      layer = nn.remat(layer, policy=policy, prevent_cse=False)
    stack = nn.scan(layer, variable_axes={"params": 0, "intermediates": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0), length=cfg.num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, kv = stack(cfg=cfg, dtype=self.dtype, param_dtype=self.param_dtype, init_std=self.init_std, mode=self.mode,
                  block_size=self.block_size, attn_impl=self.attn_impl, q_chunk=self.q_chunk,
                  return_kv=self.return_kv, prefix_chunk=self.prefix_chunk,
                  name="layers")(x, q_tok, prefix, counted,
                                 jnp.arange(cfg.num_layers))  # every layer's pool, read at its index
    return rms_norm(x, final_norm, cfg.rms_norm_eps, cfg.norm_weight_fp32), (KV(*kv) if self.return_kv else None)
