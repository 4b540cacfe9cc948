"""Training-row construction (SPEC §7.1) against hand-written step maps; boolean arrays compared exactly."""

import numpy as np
import pytest

from lrl_jax.rl import rows

# B=4, P=2: block 0 = prompt 0,1 + response 0,1; block 1 = response 2..5; block 2 = response 6..9.
P, B = 2, 4
STEPS = np.array([0, 0, 1, 2, 1, 2, 3, 5, 4, 3])  # distinct steps per block: 1, 2, 3
N_TRAIN = 8  # the stop id is response token 7; tokens 8, 9 (steps 4, 3) are post-stop


def _flags(positions, length=P + len(STEPS)):
  out = np.zeros(length, bool)
  out[[P + i for i in positions]] = True
  return out


def _rows(*per_row):
  return np.stack([_flags(r) for r in per_row])


def test_block_masked_masks_every_response_position():
  noisy, scored = rows.block_masked_rows(P, len(STEPS), N_TRAIN)
  np.testing.assert_array_equal(noisy, _rows(range(10)))
  np.testing.assert_array_equal(scored, _rows(range(8)))
  noisy2, scored2 = rows.sequence_rows("block_masked", P, STEPS, N_TRAIN, B)
  np.testing.assert_array_equal(noisy2, noisy)
  np.testing.assert_array_equal(scored2, scored)


def test_trajectory_shrink_1():
  noisy, scored = rows.trajectory_rows(P, STEPS, N_TRAIN, B, shrink=1)
  # row 0: steps 0 | 1 | 3 (response 9 has step 3 but is post-stop);
  # row 1: block 0 done (masked fully) | step 2 | step 4 fills only post-stop 8 (masks 7, 8);
  # row 2: blocks 0, 1 done | step 5.
  np.testing.assert_array_equal(scored, _rows([0, 1, 2, 4, 6], [3, 5], [7]))
  np.testing.assert_array_equal(noisy, _rows(range(10), [0, 1, 3, 5, 7, 8], [0, 1, 2, 3, 4, 5, 7]))


def test_trajectory_shrink_2():
  noisy, scored = rows.trajectory_rows(P, STEPS, N_TRAIN, B, shrink=2)
  # groups: block 0 {0}; block 1 {1, 2}; block 2 {3, 4}, {5}.
  np.testing.assert_array_equal(scored, _rows([0, 1, 2, 3, 4, 5, 6], [7]))
  np.testing.assert_array_equal(noisy, _rows(range(10), [0, 1, 2, 3, 4, 5, 7]))
  big = rows.trajectory_rows(P, STEPS, N_TRAIN, B, shrink=3)
  np.testing.assert_array_equal(big[1], _rows(range(8)))
  np.testing.assert_array_equal(big[0], _rows(range(10)))


def test_rows_scoring_only_post_stop_tokens_are_dropped():
  steps = np.array([0, 0, 1, 2, 1, 2, 3, 4, 5, 5])  # block 2's last step fills only post-stop 8, 9
  noisy, scored = rows.trajectory_rows(P, steps, N_TRAIN, B)
  np.testing.assert_array_equal(scored, _rows([0, 1, 2, 4, 6], [3, 5, 7]))
  np.testing.assert_array_equal(noisy, _rows(range(10), [0, 1, 3, 5, 7, 8, 9]))


def test_prompt_fills_whole_blocks():
  noisy, scored = rows.trajectory_rows(4, np.array([1, 0, 1, 0]), 4, 4)
  np.testing.assert_array_equal(scored[:, :4], False)
  np.testing.assert_array_equal(noisy[:, :4], False)
  np.testing.assert_array_equal(scored[:, 4:], [[0, 1, 0, 1], [1, 0, 1, 0]])
  np.testing.assert_array_equal(noisy[:, 4:], [[1, 1, 1, 1], [1, 0, 1, 0]])


def _simulated_step_map(rng, prompt_len, length, block_size):
  """Per block, fill positions in random order, 1-3 at a time, with a per-sequence step counter."""
  steps = np.empty(length, np.int64)
  step = 0
  blocks = (prompt_len + np.arange(length)) // block_size
  for b in np.unique(blocks):
    order = rng.permutation(np.flatnonzero(blocks == b))
    while len(order):
      take = rng.integers(1, 4)
      steps[order[:take]] = step
      order, step = order[take:], step + 1
  return steps


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_trajectory_replays_sampler_states(shrink):
  rng = np.random.default_rng(shrink)
  for _ in range(20):
    prompt_len, block_size = int(rng.integers(1, 9)), int(rng.choice([2, 4, 8]))
    length = block_size * int(rng.integers(1, 5)) - prompt_len % block_size
    if length <= 0:
      continue
    steps = _simulated_step_map(rng, prompt_len, length, block_size)
    n_train = int(rng.integers(1, length + 1))
    noisy, scored = rows.trajectory_rows(prompt_len, steps, n_train, block_size, shrink)
    resp_noisy, resp_scored = noisy[:, prompt_len:], scored[:, prompt_len:]
    assert not noisy[:, :prompt_len].any() and not scored[:, :prompt_len].any()
    # every trainable token is scored exactly once, post-stop tokens never, and every row scores something
    np.testing.assert_array_equal(resp_scored.sum(0), np.arange(length) < n_train)
    assert resp_scored.any(1).all()
    groups = rows.step_groups(prompt_len, steps, block_size, shrink)
    blocks = (prompt_len + np.arange(length)) // block_size
    for r in range(noisy.shape[0]):
      for t in np.flatnonzero(resp_scored[r]):
        same = blocks == blocks[t]
        first = steps[same & (groups == groups[t])].min()
        # the noisy block is what the sampler saw before the group's first step
        np.testing.assert_array_equal(resp_noisy[r][same], steps[same] >= first)
        if shrink == 1:
          assert first == steps[t]


def test_pad_rows_and_per_row():
  a = rows.block_masked_rows(2, 3, 2)
  b = rows.trajectory_rows(1, np.array([0, 1, 2]), 3, 2)  # 2 rows
  tokens = [np.array([5, 6, 7, 8, 9]), np.array([1, 2, 3, 4])]
  batch = rows.pad_rows([a, b], tokens, pad_id=0, num_rows=5, max_len=6)
  assert batch.tokens.shape == (5, 6)
  np.testing.assert_array_equal(batch.row_to_seq, [0, 1, 1, -1, -1])
  np.testing.assert_array_equal(batch.tokens[:3], [[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 0, 0], [1, 2, 3, 4, 0, 0]])
  np.testing.assert_array_equal(batch.valid.sum(1), [5, 4, 4, 0, 0])
  np.testing.assert_array_equal(batch.noisy_masked[0], [0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(batch.scored[1:3, :4], b[1])
  assert not batch.scored[3:].any() and not batch.noisy_masked[3:].any() and not batch.scored[:, 5].any()
  np.testing.assert_array_equal(rows.per_row(np.array([0.5, -1.0]), batch.row_to_seq), [0.5, -1, -1, 0, 0])
  with pytest.raises(ValueError):
    rows.pad_rows([a, b], tokens, pad_id=0, num_rows=2)
  with pytest.raises(ValueError):
    rows.pad_rows([a, b], tokens, pad_id=0, max_len=4)


def test_invalid_arguments():
  with pytest.raises(ValueError):
    rows.trajectory_rows(P, STEPS, 0, B)
  with pytest.raises(ValueError):
    rows.trajectory_rows(P, STEPS, 11, B)
  with pytest.raises(ValueError):
    rows.sequence_rows("random", P, STEPS, N_TRAIN, B)
