"""Host side of the rollout engine: a queue of requests fed into slots between compiled engine calls.

Between calls the host reads which slots finished (their records stream out at once), empties them, admits queued
requests into free slots while the page pool has room for their prompts, and preempts the latest-admitted sequence
when a slot could not get a page (it is recomputed later from its own random stream, so its output is unchanged).
Engine calls are compiled per page-table bucket (a power of two of pages, grown when a slot outgrows it).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.decode import programs, records, slots as slots_lib
from lrl_jax.decode.config import DecodeConfig, DecodeError
from lrl_jax.model.config import ModelConfig


class Request(NamedTuple):
  """One sequence to decode: prompt ids, its random stream id, its own budget of new tokens, the caller's index."""
  prompt: Sequence[int]
  stream: int
  max_new_tokens: int
  index: int


class Admission(NamedTuple):
  """A queued request placed into a global slot."""
  slot: int
  request: Request


class Finished(NamedTuple):
  """A finished sequence as `Scheduler.run` yields it: the caller's request index and the record."""
  index: int
  record: records.Record


@dataclasses.dataclass
class RunStats:
  """Totals over the engine calls of one `Scheduler.run`."""
  calls: int = 0
  forwards: int = 0
  rows: int = 0
  busy: int = 0
  preemptions: int = 0
  tokens: int = 0  # counted response tokens of finished records
  peak_pages: int = 0  # most pages in use at a call boundary
  peak_tokens_held: int = 0  # cached positions of live slots at that moment
  seconds: float = 0.0

  @property
  def useful_fraction(self) -> float:
    return self.busy / max(self.rows, 1)


@jax.jit
def stream_keys(base: jax.Array, streams: jax.Array) -> jax.Array:
  """Each sequence's key [R]: its stream id [R] folded into the run's base key (one compiled program per R)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, streams)


def next_pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


class Scheduler:
  """Continuous batching over `shape.shards` x `shape.slots` slots, each shard with a pool of `shape.pages` pages."""

  def __init__(self, cfg: ModelConfig, dcfg: DecodeConfig, shape: slots_lib.EngineShape, mesh=None,
               forwards_per_call: int = 64, keep_state: bool = False):
    self.mesh = mesh or programs.default_mesh()
    if programs.shards(self.mesh) != shape.shards:
      raise DecodeError(f"engine shape has {shape.shards} shards, the mesh's data axes {programs.shards(self.mesh)}")
    self.cfg, self.dcfg, self.shape, self.forwards_per_call = cfg, dcfg, shape, forwards_per_call
    self.total = shape.shards * shape.slots
    self.programs = programs.for_mesh(self.mesh, programs.kv_split(cfg, self.mesh))
    self.keep_state = keep_state
    self._slots = self._pool = None
    self.stats = RunStats()

  # ---- device state --------------------------------------------------------------------------------------------
  def _state(self):
    if self._slots is None:
      self._slots, self._pool = programs.init_state(self.cfg, self.shape, jnp.dtype(self.dcfg.dtype), self.mesh)
    return self._slots, self._pool

  def _keep(self, slots, pool) -> None:
    """After a run or warm-up: hold the slots and KV pool for the next run only when `keep_state`; by default they
    are dropped, so nothing of the engine stays on the devices between runs (allocating them costs one memset)."""
    self._slots, self._pool = (slots, pool) if self.keep_state else (None, None)

  @property
  def resident_bytes(self) -> int:
    """Bytes of engine state held on the devices between runs (0 unless `keep_state`)."""
    held = [x for x in jax.tree.leaves((self._slots, self._pool)) if x is not None]
    return sum(x.nbytes for x in held)

  def buckets(self) -> list[int]:
    """Page-table widths the engine may be compiled for: powers of two from one chunk of the page walk (smaller
    buckets would save next to nothing and cost compiles) to a full slot."""
    out, b = [], min(self.shape.prefix_chunk, self.shape.max_pages)
    while b <= self.shape.max_pages:
      out.append(b)
      b *= 2
    return out

  def _run(self, params, slots, pool, max_forwards: int, queued: bool, bucket: int, threshold: float):
    return self.programs.run(params, slots, pool, jnp.int32(max_forwards), jnp.bool_(queued), jnp.float32(threshold),
                             cfg=self.cfg, dcfg=self.dcfg.compiled(), shape=self.shape, bucket=bucket)

  def _admit_rows(self, slots, rows, tokens, prompt_len, end, keys):
    return self.programs.admit(slots, jnp.asarray(rows), jnp.asarray(tokens), jnp.asarray(prompt_len),
                               jnp.asarray(end), keys, shape=self.shape, block_size=self.dcfg.block_size,
                               mask_id=self.cfg.mask_token_id)

  def warm_up(self, params) -> None:
    """Compile every program a run may call: the engine per page-table bucket (no slot active: each call returns
    at once), and admitting / reading / releasing rows per power-of-two row count (all padding: no-ops)."""
    slots, pool = self._state()
    for bucket in self.buckets():
      slots, pool, st = self._run(params, slots, pool, 0, False, bucket, self.dcfg.threshold)
    n = 1
    while n <= next_pow2(self.total):
      rows = np.full((n,), self.total, np.int32)
      ones = np.ones((n,), np.int32)
      slots = self._admit_rows(slots, rows, np.zeros((n, self.shape.buffer_len), np.int32), ones, ones,
                               stream_keys(jax.random.key(0), jnp.zeros((n,), jnp.uint32)))
      jax.block_until_ready(self.programs.read_rows(slots, jnp.asarray(rows), shape=self.shape))
      n *= 2
    slots, pool = self.programs.release(slots, pool, jnp.zeros((self.total,), bool))
    jax.block_until_ready(st)
    self._keep(slots, pool)

  # ---- host loop ------------------------------------------------------------------------------------------------
  def _pool_tokens(self) -> str:
    total = self.shape.shards * self.shape.pages * self.shape.page_size
    return f"{total}" + (f" over {self.shape.shards} data shards" if self.shape.shards > 1 else "")

  def _prompt_pages(self, request: Request) -> int:
    return -(-(len(request.prompt) // self.dcfg.block_size * self.dcfg.block_size) // self.shape.page_size)

  def check(self, request: Request) -> None:
    """Reject a request no pool or slot could ever hold (one clear error naming the setting)."""
    need = len(request.prompt) + request.max_new_tokens
    if need > self.shape.max_len:
      raise DecodeError(f"prompt of {len(request.prompt)} tokens + max_new_tokens={request.max_new_tokens} exceeds "
                        f"the engine's slot length of {self.shape.max_len} tokens")
    pages = self._prompt_pages(request) + 1
    if pages > self.shape.pages:
      raise DecodeError(f"rollout pool of {self.shape.pages} pages x {self.shape.page_size} tokens per shard "
                        f"(pool_tokens={self._pool_tokens()}) cannot hold one prompt of "
                        f"{len(request.prompt)} tokens ({pages} pages with its first block): raise pool_tokens")

  def run(self, params, requests: Iterable[Request], seed: int, tokenizer=None, with_logprobs: bool = False,
          on_progress: Callable[[dict], None] | None = None,
          threshold: float | None = None) -> Iterator[Finished]:
    """Decode every request at θ = `threshold` (default the config's); yields Finished(request.index, record) as
    each sequence finishes. The slots and KV pool live for the run only (unless `keep_state`)."""
    queue = collections.deque(requests)
    for r in queue:
      self.check(r)
    threshold = self.dcfg.threshold if threshold is None else float(threshold)
    base = jax.random.key(seed)
    slots, pool = self._state()
    self._slots = self._pool = None  # the run's locals own the (donated) state from here on
    live = Live(self.shape)
    free_pages = np.full(self.shape.shards, self.shape.pages)
    num_pages = np.zeros(self.total, np.int32)
    start, finished, tokens0 = time.perf_counter(), 0, self.stats.tokens
    while queue or live.occupant:
      slots = self._admit(slots, queue, live, free_pages, base)
      bucket = self._bucket(int(num_pages.max(initial=0)) + 1)
      slots, pool, st = self._run(params, slots, pool, self.forwards_per_call, bool(queue), bucket, threshold)
      st, status, num_pages, committed, free = jax.device_get((st, slots.status, slots.num_pages, slots.committed,
                                                               pool.num_free))
      free_pages = np.asarray(free)
      self._account(st, status, committed, free_pages)
      done = np.flatnonzero(status == slots_lib.DONE)
      if len(done):
        rows = jax.device_get(self.programs.read_rows(slots, jnp.asarray(self._pad(done)), shape=self.shape))
        slots, pool = self.programs.release(slots, pool, jnp.asarray(status == slots_lib.DONE))
        for i, slot in enumerate(done):
          req = live.pop(int(slot))
          record = records.from_row(req.prompt, rows, i, req.max_new_tokens, self.dcfg.block_size,
                                    self.dcfg.stop_ids, tokenizer, with_logprobs)
          self.stats.tokens += record.length
          finished += 1
          yield Finished(req.index, record)
      for shard in np.flatnonzero(st.stalled):
        slots, pool = self._preempt(slots, pool, queue, live, int(shard))
        free_pages = np.asarray(jax.device_get(pool.num_free))
      if on_progress is not None:
        on_progress({"live": len(live.occupant), "queued": len(queue), "finished": finished,
                     "tokens": self.stats.tokens - tokens0, "seconds": time.perf_counter() - start})
    self._keep(slots, pool)
    self.stats.seconds += time.perf_counter() - start

  def _bucket(self, pages: int) -> int:
    """The smallest compiled page-table width holding `pages`."""
    return next(b for b in self.buckets() + [self.shape.max_pages] if b >= min(pages, self.shape.max_pages))

  def _pad(self, rows: np.ndarray) -> np.ndarray:
    """Row indices padded (with an out-of-range index) to a power of two, so reads compile a few shapes."""
    out = np.full(min(next_pow2(len(rows)), next_pow2(self.total)), self.total, np.int32)
    out[:len(rows)] = rows
    return out

  def _admit(self, slots, queue, live: "Live", free_pages: np.ndarray, base):
    """Move queued requests into empty slots (`plan_admissions`) and start them on the devices."""
    chosen = plan_admissions(queue, live, free_pages, self._prompt_pages)
    if not chosen:
      return slots
    n = next_pow2(len(chosen))
    rows = np.full(n, self.total, np.int32)
    tokens = np.zeros((n, self.shape.buffer_len), np.int32)
    prompt_len = np.ones(n, np.int32)
    end = np.ones(n, np.int32)
    streams = np.zeros(n, np.uint32)
    for i, (slot, req) in enumerate(chosen):
      rows[i], prompt_len[i], end[i], streams[i] = slot, len(req.prompt), len(req.prompt) + req.max_new_tokens, req.stream
      tokens[i, :len(req.prompt)] = req.prompt
    keys = stream_keys(base, jnp.asarray(streams))
    return self._admit_rows(slots, rows, tokens, prompt_len, end, keys)

  def _preempt(self, slots, pool, queue, live: "Live", shard: int):
    """A shard's pool ran out: send its latest-admitted live sequence back to the front of the queue."""
    victim = live.latest(shard)
    if victim is None:
      raise DecodeError(f"rollout pool of {self.shape.pages} pages x {self.shape.page_size} tokens per shard "
                        f"(pool_tokens={self._pool_tokens()}) is too small for one sequence: "
                        "raise pool_tokens")
    which = np.zeros(self.total, bool)
    which[victim] = True
    slots, pool = self.programs.release(slots, pool, jnp.asarray(which))
    queue.appendleft(live.pop(victim))
    self.stats.preemptions += 1
    return slots, pool

  def _account(self, st, status, committed, free_pages: np.ndarray) -> None:
    self.stats.calls += 1
    self.stats.forwards += int(np.max(st.forwards))
    self.stats.rows += int(np.sum(st.rows))
    self.stats.busy += int(np.sum(st.busy))
    in_use = int(self.shape.shards * self.shape.pages - free_pages.sum())
    if in_use > self.stats.peak_pages:
      self.stats.peak_pages = in_use
      self.stats.peak_tokens_held = int(committed[status == slots_lib.ACTIVE].sum())


def plan_admissions(queue: collections.deque, live: "Live", free_pages: np.ndarray,
                    prompt_pages: Callable[[Request], int]) -> list[Admission]:
  """Pop queued requests, in queue order, into empty slots (recorded in `live`); returns them in that order.

  Each shard's budget is its free pages [shards] less one page of growth room per live sequence. The head of the
  queue needs its prompt's pages + 1 and goes to the first empty slot of the shard with the largest budget (ties: the
  lower shard) that has an empty slot and room for it, or that holds no live sequence (an empty shard always takes
  one). Admission stops at the first request that fits nowhere: no later request overtakes it.
  """
  budget = free_pages.astype(np.int64) - live.per_shard()
  chosen: list[Admission] = []
  while queue:
    need = prompt_pages(queue[0]) + 1
    order = sorted(range(live.shape.shards), key=lambda k: -budget[k])
    shard = next((k for k in order if live.empty_in(k) and (budget[k] >= need or not live.in_shard(k))), None)
    if shard is None:
      break
    slot = live.empty_in(shard)[0]
    budget[shard] -= need
    req = queue.popleft()
    live.add(slot, req)
    chosen.append(Admission(slot, req))
  return chosen


class Live:
  """Which request occupies which global slot, and when it was admitted (the preemption order)."""

  def __init__(self, shape: slots_lib.EngineShape):
    self.shape = shape
    self.occupant: dict[int, Request] = {}
    self.admitted_at: dict[int, int] = {}
    self._tick = 0

  def add(self, slot: int, req: Request) -> None:
    self.occupant[slot] = req
    self.admitted_at[slot] = self._tick
    self._tick += 1

  def pop(self, slot: int) -> Request:
    self.admitted_at.pop(slot)
    return self.occupant.pop(slot)

  def in_shard(self, shard: int) -> list[int]:
    return [s for s in self.occupant if s // self.shape.slots == shard]

  def empty_in(self, shard: int) -> list[int]:
    base = shard * self.shape.slots
    return [s for s in range(base, base + self.shape.slots) if s not in self.occupant]

  def latest(self, shard: int) -> int | None:
    """The slot of the shard's latest-admitted sequence (the one to preempt), None with fewer than two live."""
    mine = self.in_shard(shard)
    return max(mine, key=lambda k: (self.admitted_at[k], k)) if len(mine) > 1 else None

  def per_shard(self) -> np.ndarray:
    out = np.zeros(self.shape.shards, np.int64)
    for s in self.occupant:
      out[s // self.shape.slots] += 1
    return out
