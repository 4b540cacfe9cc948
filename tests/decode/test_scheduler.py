"""The scheduler's admit / preempt policy against hand-computed expectations: which queued request goes into which
slot when (queue order, page budgets with growth room, shards by free pages), which live sequence is preempted, and
where it is re-queued."""

import collections

import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.decode import DecodeConfig, DecodeError
from lrl_jax.decode.scheduler import Admission, Live, Request, Scheduler, plan_admissions
from lrl_jax.decode.slots import EngineShape
from lrl_jax.weights.tiny import tiny_config


def _shape(shards=1, slots=4):
  return EngineShape(slots=slots, pages=64, page_size=4, max_len=32, window=4, shards=shards)


def _requests(n):
  return collections.deque(Request([5] * (i + 1), i, 8, i) for i in range(n))


def _plan(queue, live, free, needs):
  """(slot, request index) admitted, request i's prompt needing needs[i] pages (the policy adds one of growth)."""
  got = plan_admissions(queue, live, np.asarray(free), lambda r: needs[r.index])
  assert all(isinstance(a, Admission) for a in got)
  return [(a.slot, a.request.index) for a in got]


def test_fifo_into_the_first_empty_slots():
  live, queue = Live(_shape()), _requests(5)
  assert _plan(queue, live, [64], [1] * 5) == [(0, 0), (1, 1), (2, 2), (3, 3)]
  assert [r.index for r in queue] == [4]  # no slot left: the fifth waits
  assert [live.admitted_at[s] for s in range(4)] == [0, 1, 2, 3]
  live.pop(2)  # slot 2 finished: the waiting request takes it
  assert _plan(queue, live, [64], [1] * 5) == [(2, 4)] and not queue
  assert live.admitted_at[2] == 4


def test_budget_keeps_growth_room_and_nothing_overtakes_the_head():
  """10 free pages, one live sequence: budget 10 - 1 = 9. Requests need 2+1, 2+1, 3+1, 0+1 pages: the first two fit
  (9 -> 6 -> 3), the third (4 > 3) waits, and the fourth, which would fit, waits behind it."""
  live, queue = Live(_shape()), _requests(4)
  live.add(0, Request([5], 99, 8, 99))
  needs = [2, 2, 3, 0]
  assert _plan(queue, live, [10], needs) == [(1, 0), (2, 1)]
  assert [r.index for r in queue] == [2, 3]
  # next boundary, 10 free pages again, 3 live: budget 7 holds the third (4); the fourth finds no empty slot
  assert _plan(queue, live, [10], needs) == [(3, 2)]
  assert [r.index for r in queue] == [3]


def test_an_empty_shard_takes_its_first_request_whatever_its_budget():
  """2 free pages, nothing live: a request needing 4+1 is admitted (it will grow by preempting nothing: the pool
  check guarantees its prompt fits the whole pool); the next (0+1) must then fit a budget of 2 - 5 < 1: it waits."""
  live, queue = Live(_shape()), _requests(2)
  assert _plan(queue, live, [2], [4, 0]) == [(0, 0)]
  assert [r.index for r in queue] == [1]


def test_shards_by_largest_budget_ties_to_the_lower_shard():
  """Two shards of two slots, free pages [6, 8], every request needing 2+1: shard budgets go [6, 8] -> [6, 5] ->
  [3, 5] -> [3, 2] -> [0, 2]; each request takes the first empty slot of the richer shard (slots 2-3 are shard 1's)."""
  live, queue = Live(_shape(shards=2, slots=2)), _requests(5)
  assert _plan(queue, live, [6, 8], [2] * 5) == [(2, 0), (0, 1), (3, 2), (1, 3)]
  assert [r.index for r in queue] == [4]  # every slot is taken
  live, queue = Live(_shape(shards=2, slots=2)), _requests(3)
  assert _plan(queue, live, [5, 5], [2] * 3) == [(0, 0), (2, 1)]  # tie: shard 0 first; then [2, 5] -> [2, 2]
  assert [r.index for r in queue] == [2]  # 3 pages fit neither budget of 2, and both shards hold a sequence


def test_a_shard_without_an_empty_slot_is_skipped():
  live, queue = Live(_shape(shards=2, slots=1)), _requests(2)
  live.add(0, Request([5], 99, 8, 99))  # shard 0's only slot
  assert _plan(queue, live, [60, 3], [2, 2]) == [(1, 0)]  # shard 1, though shard 0 has 59 pages to spare
  assert [r.index for r in queue] == [1]


def test_the_victim_is_the_latest_admitted_sequence_of_the_shard():
  live = Live(_shape(shards=2, slots=3))
  for slot, index in [(0, 0), (1, 1), (3, 2), (2, 3), (4, 4)]:
    live.add(slot, Request([5], index, 8, index))
  assert live.latest(0) == 2 and live.latest(1) == 4  # by admission, not by slot number
  live.pop(0)
  live.add(0, Request([5], 5, 8, 5))  # a later admission into a lower slot
  assert live.latest(0) == 0
  live.pop(3)
  assert live.latest(1) is None  # one live sequence: nothing to preempt it for
  assert live.per_shard().tolist() == [3, 1]


@pytest.fixture(scope="module")
def scheduler():
  cfg = tiny_config()
  shape = EngineShape(slots=3, pages=6, page_size=4, max_len=16, window=4)
  return Scheduler(cfg, DecodeConfig(block_size=4, max_new_tokens=8), shape)


def test_prompt_pages_count_the_complete_prompt_blocks(scheduler):
  """The engine prefills a prompt's complete blocks (4 tokens) into pages of 4; the last partial block is decoded."""
  pages = [scheduler._prompt_pages(Request([5] * n, 0, 4, 0)) for n in (1, 3, 4, 7, 8, 9)]
  assert pages == [0, 0, 1, 1, 2, 2]
  scheduler.check(Request([5] * 12, 0, 4, 0))
  with pytest.raises(DecodeError, match="exceeds the engine's slot length of 16 tokens"):
    scheduler.check(Request([5] * 12, 0, 5, 0))
  small = Scheduler(scheduler.cfg, scheduler.dcfg, EngineShape(slots=1, pages=2, page_size=4, max_len=16, window=4))
  with pytest.raises(DecodeError, match="cannot hold one prompt of 8 tokens \\(3 pages with its first block\\)"):
    small.check(Request([5] * 8, 0, 4, 0))


def test_preemption_requeues_the_victim_at_the_front(scheduler):
  """Three live sequences, one waiting: the pool ran out, so the latest admitted goes back to the head of the queue
  (its pages freed, the slot empty) and is the next admitted, before the request that waited longer."""
  slots, pool = scheduler._state()
  live, queue = Live(scheduler.shape), collections.deque([Request([5], 3, 8, 3)])
  for slot in (0, 2, 1):
    live.add(slot, Request([5], slot, 8, slot))
  slots = slots._replace(num_pages=jnp.asarray([1, 2, 1], jnp.int32),
                         page_table=slots.page_table.at[:, :2].set(jnp.asarray([[5, 0], [3, 2], [4, 0]], jnp.int32)),
                         status=jnp.ones(3, jnp.int32))
  pool = pool._replace(num_free=jnp.asarray([2], jnp.int32))  # free[:2] = [0, 1]; 2, 3, 4, 5 are held
  before = scheduler.stats.preemptions
  slots, pool = scheduler._preempt(slots, pool, queue, live, 0)
  assert [r.index for r in queue] == [1, 3] and sorted(live.occupant) == [0, 2]
  assert scheduler.stats.preemptions == before + 1
  assert np.asarray(slots.status).tolist() == [1, 0, 1] and np.asarray(slots.num_pages).tolist() == [1, 0, 1]
  assert np.asarray(pool.free)[:int(pool.num_free[0])].tolist() == [0, 1, 3, 2]  # slot 1's pages back on the stack
  assert _plan(queue, live, [3], [0, 0, 0, 0]) == [(1, 1)] and [r.index for r in queue] == [3]
  live.pop(0)
  live.pop(2)
  with pytest.raises(DecodeError, match="too small for one sequence: raise pool_tokens"):
    scheduler._preempt(slots, pool, queue, live, 0)  # one live sequence (slot 1): nothing to preempt
