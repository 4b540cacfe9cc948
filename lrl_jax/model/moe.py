"""The sparse mixture-of-experts MLP of SDAR-30B-A3B (Qwen3-MoE): a top-k router and SwiGLU experts, dropless.

Tokens are routed in float32 (softmax, top-k, optional renormalisation of the k weights), then sorted by expert so
each expert's tokens are one contiguous group, and the three expert projections run as grouped matmuls over the
groups (`model/grouped_matmul.py`: `ragged_dot` on TPU, a loop over row tiles on CPU, a tiled batched matmul on GPU):
compute is proportional to tokens × k, never to tokens × experts, and no token is dropped whatever the load.
`dense_reference` computes every expert for every token; it is the baseline of the bench and an independent check in
the tests, never used by the model.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lrl_jax.model.grouped_matmul import grouped_matmul


class Routing(NamedTuple):
  """The router's choice for n tokens: k experts each and their weights."""
  weights: jax.Array  # [n, k] activation dtype, renormalised to sum 1 when norm_topk_prob
  experts: jax.Array  # [n, k] int32
  probs: jax.Array  # [n, experts] float32 softmax of the router logits


class RouterStats(NamedTuple):
  """Per-layer router statistics over the valid tokens of a call (sums, so micro-batches add up)."""
  load: jax.Array  # [..., experts] float32: token-to-expert assignments (each token counts k times)
  prob: jax.Array  # [..., experts] float32: sum of the router's softmax probabilities
  tokens: jax.Array  # [...] float32: valid tokens


def route(x: jax.Array, router: jax.Array, top_k: int, norm_topk_prob: bool) -> Routing:
  """x [n, e], router [e, experts] → Routing; logits and softmax in float32, weights cast to x's dtype."""
  logits = jnp.einsum("ne,ex->nx", x, router.astype(x.dtype), preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  weights, experts = jax.lax.top_k(probs, top_k)
  if norm_topk_prob:
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return Routing(weights.astype(x.dtype), experts.astype(jnp.int32), probs)


def experts_grouped(x: jax.Array, routing: Routing, gate: jax.Array, up: jax.Array, down: jax.Array,
                    matmul=grouped_matmul) -> jax.Array:
  """Σ_k w_k · expert_k(x) for x [n, e] with gate/up [experts, e, m], down [experts, m, e], as grouped matmuls.

  The n·k (token, expert) pairs are sorted by expert (a stable sort: the group sizes are the experts' loads), the
  sorted rows go through `matmul` per projection, and the inverse permutation brings each token's k outputs back
  before the weighted sum.
  """
  n, k = routing.experts.shape
  num_experts = gate.shape[0]
  flat = routing.experts.reshape(-1)  # [n*k]
  order = jnp.argsort(flat, stable=True)  # [n*k] sorted pair → pair
  group_sizes = jnp.zeros((num_experts,), jnp.int32).at[flat].add(1)  # [experts]
  rows = x[order // k]  # [n*k, e], grouped by expert
  hidden = jax.nn.silu(matmul(rows, gate.astype(x.dtype), group_sizes)) * matmul(rows, up.astype(x.dtype),
                                                                                  group_sizes)  # [n*k, m]
  out = matmul(hidden, down.astype(x.dtype), group_sizes)  # [n*k, e]
  inverse = jnp.zeros_like(order).at[order].set(jnp.arange(n * k, dtype=order.dtype))  # pair → sorted pair
  out = out[inverse].reshape(n, k, -1)
  return jnp.einsum("nke,nk->ne", out, routing.weights)


def dense_reference(x: jax.Array, routing: Routing, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
  """The same output with every expert applied to every token (FLOPs × experts/k): a baseline, not the model."""
  num_experts = gate.shape[0]
  dense_w = jnp.sum(jax.nn.one_hot(routing.experts, num_experts, dtype=x.dtype) * routing.weights[..., None], axis=1)
  hidden = jax.nn.silu(jnp.einsum("ne,xem->nxm", x, gate.astype(x.dtype))) * jnp.einsum("ne,xem->nxm", x,
                                                                                          up.astype(x.dtype))
  out = jnp.einsum("nxm,xme->nxe", hidden, down.astype(x.dtype))
  return jnp.einsum("nxe,nx->ne", out, dense_w)


def router_stats(routing: Routing, valid: jax.Array) -> RouterStats:
  """Sums over the tokens with valid [n] (padding excluded) of the assignments and probabilities per expert."""
  num_experts = routing.probs.shape[-1]
  v = valid.astype(jnp.float32)
  load = jnp.sum(jax.nn.one_hot(routing.experts, num_experts, dtype=jnp.float32) * v[:, None, None], axis=(0, 1))
  return RouterStats(load, jnp.sum(routing.probs * v[:, None], axis=0), jnp.sum(v))


def sparse_mlp(x: jax.Array, valid: jax.Array, router: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array,
               top_k: int, norm_topk_prob: bool, experts=experts_grouped) -> tuple[jax.Array, RouterStats]:
  """The MoE block on x [b, t, e] (valid [b, t]) → (output [b, t, e], its RouterStats); `experts` computes the
  routed experts (`experts_grouped`, or `moe_dispatch.experts` with the experts split over a mesh axis)."""
  b, t, e = x.shape
  flat = x.reshape(b * t, e)
  routing = route(flat, router, top_k, norm_topk_prob)
  out = experts(flat, routing, gate, up, down)
  return out.reshape(b, t, e), router_stats(routing, valid.reshape(b * t))


def load_balancing_loss(stats: RouterStats) -> jax.Array:
  """The Switch/Qwen3-MoE auxiliary loss `experts · Σ_e f_e · P_e` over all layers' tokens together (as
  transformers' `load_balancing_loss_func`): f_e the share of tokens routed to e (summing to k), P_e the mean
  router probability. stats have a leading layers axis; the minimum, uniform routing, is k."""
  num_experts = stats.load.shape[-1]
  tokens = jnp.maximum(jnp.sum(stats.tokens), 1.0)
  return num_experts * jnp.sum(jnp.sum(stats.load, axis=0) / tokens * jnp.sum(stats.prob, axis=0) / tokens)


def load_summary(stats: RouterStats) -> dict[str, jax.Array]:
  """Scalar metrics of expert load (assignments per expert, all layers): max/mean (1 = balanced) and min/mean."""
  load = stats.load.reshape(-1, stats.load.shape[-1])  # [layers, experts]
  mean = jnp.maximum(jnp.mean(load, axis=-1), 1e-9)
  return {"moe/load_max_over_mean": jnp.mean(jnp.max(load, axis=-1) / mean),
          "moe/load_min_over_mean": jnp.mean(jnp.min(load, axis=-1) / mean)}
