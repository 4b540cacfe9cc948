"""Device state of the rollout engine: sequence slots and a pool of KV pages, split into shards.

A mesh's data axes split the slots and the page pool into `shards` equal parts; each shard's slots use only its own
pages (page ids are local), so a shard decodes its sequences with no cross-shard traffic. A slot holds one sequence's
whole token buffer (prompt, then generated blocks), its position in the block grid and its page table; pages are
taken from the shard's free stack as the slot's cache grows and pushed back when it finishes or is preempted.
Functions here work on one shard's arrays; `decode/programs.py` maps them over the mesh.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lrl_jax.model.config import ModelConfig

EMPTY, ACTIVE, DONE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class EngineShape:
  """Static sizes of one engine: slots and pages per shard, token buffer; hashable (a static argument)."""
  slots: int  # sequences decoded at once per shard
  pages: int  # KV pages of a shard's pool
  page_size: int  # positions per page, a multiple of the block size
  max_len: int  # longest prompt + budget a slot holds, a multiple of the block size
  window: int  # tokens per slot per forward: B, or 2B when a commit is fused with the next block's first step
  prefix_chunk: int = 8  # pages per step of the XLA paged-prefix walk
  shards: int = 1  # data-parallel parts (devices of the mesh's data axes)

  @property
  def max_pages(self) -> int:
    """Page-table width: pages of a full slot, rounded up to a power of two (the largest page-table bucket)."""
    return 1 << (-(-self.max_len // self.page_size) - 1).bit_length()

  @property
  def buffer_len(self) -> int:
    """Token buffer columns: max_len plus one window, so a window never reads past the end."""
    return self.max_len + self.window


class Slots(NamedTuple):
  """Per-slot state; positions count from each sequence's first prompt token."""
  tokens: jax.Array  # [S, buffer_len] int32: prompt, decided tokens, mask id elsewhere
  step_map: jax.Array  # [S, buffer_len] int32: denoising forward that filled each token, -1 if none
  logp: jax.Array  # [S, buffer_len] float32: sampler log-prob of each filled token
  prompt_len: jax.Array  # [S] int32
  end: jax.Array  # [S] int32: prompt_len + this request's max_new_tokens
  committed: jax.Array  # [S] int32: positions whose keys/values are in the slot's pages (whole blocks)
  cur: jax.Array  # [S] int32: first position of the block being denoised
  step: jax.Array  # [S] int32: denoising steps taken on the current block
  nf: jax.Array  # [S] int32: denoising forwards of the sequence (its step_map counter)
  commits: jax.Array  # [S] int32: commit forwards of decoded blocks (forwards_total = nf + commits)
  key: jax.Array  # [S] PRNG keys, one stream per sequence
  status: jax.Array  # [S] int32: EMPTY, ACTIVE or DONE
  page_table: jax.Array  # [S, max_pages] int32
  num_pages: jax.Array  # [S] int32


class Pool(NamedTuple):
  """KV pages of every layer and the stack of free page ids (per shard: the shard's own pages)."""
  k: jax.Array  # [layers, pages, page_size, kv_heads, head_dim]
  v: jax.Array
  free: jax.Array  # [pages] int32: free page ids in free[:num_free]
  num_free: jax.Array  # [1] int32


def init_slots(shape: EngineShape) -> Slots:
  """Empty slots of every shard: [shards * slots, ...]."""
  s, n = shape.shards * shape.slots, shape.buffer_len
  zeros = jnp.zeros((s,), jnp.int32)
  return Slots(jnp.zeros((s, n), jnp.int32), jnp.full((s, n), -1, jnp.int32), jnp.zeros((s, n), jnp.float32),
               zeros, zeros, zeros, zeros, zeros, zeros, zeros, jax.random.split(jax.random.key(0), s),
               zeros, jnp.zeros((s, shape.max_pages), jnp.int32), zeros)


def init_pool(cfg: ModelConfig, shape: EngineShape, dtype) -> Pool:
  """Every shard's pages [layers, shards * pages, ...], each shard's free stack holding its local ids 0..pages-1."""
  kv = (cfg.num_layers, shape.shards * shape.pages, shape.page_size, cfg.num_kv_heads, cfg.head_dim)
  free = jnp.tile(jnp.arange(shape.pages, dtype=jnp.int32), shape.shards)
  return Pool(jnp.zeros(kv, dtype), jnp.zeros(kv, dtype), free, jnp.full((shape.shards,), shape.pages, jnp.int32))


def free_pages(pool: Pool, slots: Slots, which: jax.Array) -> tuple[Pool, Slots]:
  """Push the pages of slots `which` [S] bool onto the free stack; those slots then hold no page."""
  held = which[:, None] & (jnp.arange(slots.page_table.shape[1]) < slots.num_pages[:, None])  # [S, P]
  flat = held.reshape(-1)
  at = pool.num_free[0] + jnp.cumsum(flat) - 1
  at = jnp.where(flat, at, pool.free.shape[0])  # out of bounds: dropped
  free = pool.free.at[at].set(slots.page_table.reshape(-1), mode="drop", unique_indices=True)
  pool = pool._replace(free=free, num_free=pool.num_free + flat.sum().astype(jnp.int32))
  return pool, slots._replace(num_pages=jnp.where(which, 0, slots.num_pages))


def admit(slots: Slots, rows: jax.Array, tokens: jax.Array, prompt_len: jax.Array, end: jax.Array, keys: jax.Array,
          *, block_size: int, mask_id: int) -> Slots:
  """Start new sequences in local slots `rows` [R] (out-of-range rows are padding): tokens [R, buffer_len] hold
  each prompt then mask ids. The first block to denoise is the one holding the prompt's end; the complete prompt blocks
  before it are committed (prefilled) by the engine's first forwards."""
  cur = (prompt_len // block_size) * block_size
  set_rows = lambda a, v: a.at[rows].set(v, mode="drop")
  pos = jnp.arange(tokens.shape[1])
  tokens = jnp.where(pos[None] < prompt_len[:, None], tokens, mask_id)
  r = rows.shape[0]
  zeros = jnp.zeros((r,), jnp.int32)
  return slots._replace(
      tokens=set_rows(slots.tokens, tokens), step_map=set_rows(slots.step_map, jnp.full(tokens.shape, -1, jnp.int32)),
      logp=set_rows(slots.logp, jnp.zeros(tokens.shape, jnp.float32)), prompt_len=set_rows(slots.prompt_len, prompt_len),
      end=set_rows(slots.end, end), committed=set_rows(slots.committed, zeros), cur=set_rows(slots.cur, cur),
      step=set_rows(slots.step, zeros),
      nf=set_rows(slots.nf, zeros), commits=set_rows(slots.commits, zeros), key=set_rows(slots.key, keys),
      status=set_rows(slots.status, jnp.full((r,), ACTIVE, jnp.int32)), num_pages=set_rows(slots.num_pages, zeros))


def release(slots: Slots, pool: Pool, which: jax.Array) -> tuple[Slots, Pool]:
  """Empty slots `which` [S] bool (finished and read, or preempted): their pages go back to the pool."""
  pool, slots = free_pages(pool, slots, which)
  return slots._replace(status=jnp.where(which, EMPTY, slots.status)), pool


class Rows(NamedTuple):
  """What the host reads of finished slots: token rows and counters, [R, ...]."""
  tokens: jax.Array
  step_map: jax.Array
  logp: jax.Array
  prompt_len: jax.Array
  cur: jax.Array
  nf: jax.Array
  commits: jax.Array


def read_rows(slots: Slots, rows: jax.Array) -> Rows:
  """Local rows `rows` [R] of the token buffers and their counters; rows out of range read zeros."""
  inside = (rows >= 0) & (rows < slots.tokens.shape[0])

  def take(a):
    got = a[jnp.clip(rows, 0, a.shape[0] - 1)]
    return jnp.where(inside.reshape((-1,) + (1,) * (got.ndim - 1)), got, jnp.zeros_like(got))

  return Rows(take(slots.tokens), take(slots.step_map), take(slots.logp), take(slots.prompt_len), take(slots.cur),
              take(slots.nf), take(slots.commits))
