"""The online-softmax state every attention backend folds keys into, and its merges: written once, used by all.

A `Partial` holds per query row the unnormalised accumulator sum(exp(s - m) * v), the running max m and the running
sum l = sum(exp(s - m)), all float32 (FlashAttention's state). `fold` adds a tile of scores, `combine` merges two
states over disjoint key sets (the paged kernels' prefix with the call's own window), `normalized` and `log_sum_exp`
end it. Layout-free: acc is [..., d] and m, l are [...] for any leading axes (a kernel's [rows] or XLA's
[b, t, kh, g]). The Mosaic kernels keep m and l lane-broadcast in VMEM refs and update them in place instead.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

NEG = -1e30  # masked score; finite so that a tile of masked scores never yields inf - inf


class Partial(NamedTuple):
  """Unnormalised softmax state per query row: acc [..., d], running max m and sum l [...]."""
  acc: jax.Array
  m: jax.Array
  l: jax.Array


def empty(rows: tuple[int, ...], d: int) -> Partial:
  """The state of rows that have seen no key: acc [*rows, d] zeros, m = NEG, l = 0."""
  return Partial(jnp.zeros((*rows, d), jnp.float32), jnp.full(rows, NEG, jnp.float32), jnp.zeros(rows, jnp.float32))


def fold(state: Partial, scores: jax.Array, allow: jax.Array, pv: Callable[[jax.Array], jax.Array]) -> Partial:
  """Fold in keys with scores [..., s] (allowed where `allow` broadcasts True); pv(p) is the probabilities
  p [..., s] float32 times the keys' values, [..., d] float32 (each layout and platform writes its own product)."""
  scores = jnp.where(allow, scores, NEG)
  m = jnp.maximum(state.m, scores.max(axis=-1))
  p = jnp.where(allow, jnp.exp(scores - m[..., None]), 0.0)
  corr = jnp.exp(state.m - m)
  return Partial(corr[..., None] * state.acc + pv(p), m, corr * state.l + p.sum(axis=-1))


def combine(a: Partial, b: Partial) -> Partial:
  """Log-sum-exp merge of two states over disjoint key sets."""
  top = jnp.maximum(a.m, b.m)
  ca, cb = jnp.exp(a.m - top), jnp.exp(b.m - top)
  return Partial(ca[..., None] * a.acc + cb[..., None] * b.acc, top, ca * a.l + cb * b.l)


def normalized(state: Partial) -> jax.Array:
  """acc / l [..., d] float32; rows that saw no key give zeros."""
  return state.acc / jnp.where(state.l > 0, state.l, 1.0)[..., None]


def log_sum_exp(m: jax.Array, l: jax.Array) -> jax.Array:
  """m + log(l), elementwise; rows that saw no key get -NEG, so a backward pass gives them no probability anywhere."""
  seen = l > 0
  return jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -NEG)
