"""Page allocation of the rollout engine (one shard): `engine._take_pages` and `slots.free_pages` / `release` on a
pool of 8 pages, against hand-computed free stacks and page tables, and a random run against a plain Python stack."""

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.decode import engine, slots as slots_lib

# 4 slots, 8 pages of 4 positions; windows of 8 tokens take at most 3 new pages a call; page tables 8 wide
SHAPE = slots_lib.EngineShape(slots=4, pages=8, page_size=4, max_len=32, window=8)


def _fresh():
  kv = jnp.zeros((1, SHAPE.pages, SHAPE.page_size, 1, 1), jnp.float32)
  pool = slots_lib.Pool(kv, kv, jnp.arange(SHAPE.pages, dtype=jnp.int32), jnp.full((1,), SHAPE.pages, jnp.int32))
  return pool, slots_lib.init_slots(SHAPE)


def _take(pool, slots, need):
  return engine._take_pages(pool, slots, jnp.asarray(need, jnp.int32), SHAPE)


def _free(pool, slots, which):
  return slots_lib.free_pages(pool, slots, jnp.asarray(which, bool))


def _stack(pool) -> list[int]:
  return np.asarray(pool.free)[:int(pool.num_free[0])].tolist()


def _tables(slots) -> list[list[int]]:
  """Each slot's held pages, in page-table order."""
  table, n = np.asarray(slots.page_table), np.asarray(slots.num_pages)
  return [table[s, :n[s]].tolist() for s in range(SHAPE.slots)]


def test_shape_sizes():
  assert SHAPE.max_pages == 8 and SHAPE.buffer_len == 40
  assert slots_lib.EngineShape(slots=1, pages=4, page_size=4, max_len=20, window=4).max_pages == 8  # 5 -> 8


def test_allocation_order_exhaustion_freeing_and_reuse():
  pool, slots = _fresh()
  assert _stack(pool) == list(range(8)) and _tables(slots) == [[]] * 4
  # slot order, each slot taking the top of the stack: slot 0 the top 2, slot 2 the 3 below, slot 3 the last 3
  grant = _take(pool, slots, [2, 0, 3, 3])
  pool, slots = grant.pool, grant.slots
  assert np.asarray(grant.granted).tolist() == [True, True, True, True]
  assert _tables(slots) == [[6, 7], [], [3, 4, 5], [0, 1, 2]] and _stack(pool) == []
  assert np.asarray(slots.page_table)[0].tolist() == [6, 7, 0, 0, 0, 0, 0, 0]  # columns past num_pages untouched
  # exhausted: a slot asking for one page gets none and keeps what it holds; a slot asking none is granted
  grant = _take(pool, slots, [1, 0, 0, 0])
  assert np.asarray(grant.granted).tolist() == [False, True, True, True]
  assert _tables(grant.slots) == _tables(slots) and _stack(grant.pool) == []
  # freeing pushes a slot's pages in page-table order; several slots go slot by slot
  pool, slots = _free(pool, slots, [False, False, True, False])
  assert _stack(pool) == [3, 4, 5] and _tables(slots) == [[6, 7], [], [], [0, 1, 2]]
  pool, slots = _free(pool, slots, [True, False, False, True])
  assert _stack(pool) == [3, 4, 5, 6, 7, 0, 1, 2] and _tables(slots) == [[]] * 4
  # no double free: a slot that holds no page pushes nothing
  again, slots = _free(pool, slots, [True, True, True, True])
  assert _stack(again) == _stack(pool)
  # reuse is last-freed first
  grant = _take(pool, slots, [0, 2, 0, 1])
  assert _tables(grant.slots) == [[], [1, 2], [], [0]] and _stack(grant.pool) == [3, 4, 5, 6, 7]


def test_a_slot_that_does_not_fit_blocks_every_later_slot():
  """Grants go in slot order while the running total fits: slot 2's 3 pages do not fit in the 2 left, and slot 3's
  one page is refused too though it would fit; a granted slot appends to the pages it holds."""
  pool, slots = _fresh()
  grant = _take(pool, slots, [3, 3, 3, 1])
  assert np.asarray(grant.granted).tolist() == [True, True, False, False]
  assert _tables(grant.slots) == [[5, 6, 7], [2, 3, 4], [], []] and _stack(grant.pool) == [0, 1]
  grant = _take(grant.pool, grant.slots, [1, 0, 0, 0])
  assert _tables(grant.slots) == [[5, 6, 7, 1], [2, 3, 4], [], []] and _stack(grant.pool) == [0]


def test_release_frees_pages_and_empties_slots():
  pool, slots = _fresh()
  grant = _take(pool, slots, [1, 2, 0, 0])
  slots = grant.slots._replace(status=jnp.asarray([slots_lib.DONE, slots_lib.ACTIVE, slots_lib.ACTIVE,
                                                   slots_lib.EMPTY], jnp.int32))
  slots, pool = slots_lib.release(slots, grant.pool, jnp.asarray([True, False, False, False]))
  assert np.asarray(slots.status).tolist() == [slots_lib.EMPTY, slots_lib.ACTIVE, slots_lib.ACTIVE, slots_lib.EMPTY]
  assert _stack(pool) == [0, 1, 2, 3, 4, 7] and _tables(slots) == [[], [5, 6], [], []]


def test_admit_starts_rows_and_padding_rows_are_dropped():
  _, slots = _fresh()
  tokens = jnp.asarray(np.arange(2 * SHAPE.buffer_len).reshape(2, -1) % 50, jnp.int32)
  keys = jax.random.split(jax.random.key(1), 2)
  got = slots_lib.admit(slots, jnp.asarray([2, SHAPE.slots], jnp.int32), tokens, jnp.asarray([6, 3], jnp.int32),
                        jnp.asarray([14, 9], jnp.int32), keys, block_size=4, mask_id=99)
  assert np.asarray(got.status).tolist() == [0, 0, slots_lib.ACTIVE, 0]  # row 4 is out of range: padding
  row = np.asarray(got.tokens)[2]
  assert row[:6].tolist() == list(range(6)) and (row[6:] == 99).all()  # the prompt, then mask ids
  assert int(got.cur[2]) == 4 and int(got.end[2]) == 14 and int(got.num_pages[2]) == 0  # the block holding pos 5
  rows = slots_lib.read_rows(got, jnp.asarray([2, SHAPE.slots, -1], jnp.int32))
  assert np.asarray(rows.tokens)[0].tolist() == row.tolist() and (np.asarray(rows.tokens)[1:] == 0).all()
  assert np.asarray(rows.prompt_len).tolist() == [6, 0, 0]


def test_random_takes_and_frees_keep_every_page_exactly_once():
  """200 random operations against a plain Python stack: same grants, same tables, and the free stack plus the held
  pages are always the 8 page ids, each once."""
  rng = np.random.default_rng(0)
  pool, slots = _fresh()
  stack, held = list(range(8)), [[] for _ in range(4)]
  for _ in range(200):
    if rng.random() < 0.6:
      need = rng.integers(0, 4, 4)
      want, top, total = [], len(stack), 0
      for s in range(4):
        total += need[s]
        ok = need[s] == 0 or total <= len(stack)
        want.append(bool(ok))
        if ok and need[s]:
          top -= need[s]
          held[s] += stack[top:top + need[s]]
      stack = stack[:top]
      grant = _take(pool, slots, need)
      pool, slots = grant.pool, grant.slots
      assert np.asarray(grant.granted).tolist() == want
    else:
      which = rng.random(4) < 0.4
      for s in range(4):
        if which[s]:
          stack += held[s]
          held[s] = []
      pool, slots = _free(pool, slots, which)
    assert _stack(pool) == stack and _tables(slots) == held
    assert sorted(stack + [p for h in held for p in h]) == list(range(8))
