"""Row lengths and noisy windows come from fixed buckets: a run over many mixed lengths compiles few programs."""

import numpy as np

from lrl_jax.decode import Record
from lrl_jax.rl import batch as batch_lib, layout, losses, step as step_lib


def records(rng, n, max_prompt, max_response, block):
  out = []
  for _ in range(n):
    p, r = int(rng.integers(3, max_prompt + 1)), int(rng.integers(2, max_response + 1))
    r = -(-(p + r) // block) * block - p  # the sampler's records run to the end of the last block
    out.append(Record(rng.integers(4, 90, p).astype(np.int32), rng.integers(4, 90, r).astype(np.int32),
                      rng.integers(0, 4, r).astype(np.int32), length=r, forwards_total=0, truncated=False))
  return out


def test_row_length_buckets_are_finer_than_powers_of_two():
  assert batch_lib.length_bucket(256 + 8192, 32) == 9216
  assert batch_lib.length_bucket(256 + 8192, 32, multiple=1024) == 9216
  assert batch_lib.length_bucket(8192, 32) == 8192 and batch_lib.length_bucket(8193, 32) == 9216
  buckets = batch_lib.length_buckets(9216, 32)
  assert len(buckets) == 49 and buckets[-2:] == [8192, 9216]
  lengths = np.arange(1, 9217)
  padded = np.asarray([batch_lib.length_bucket(int(n), 32) for n in lengths])
  assert set(padded) == set(buckets) and (padded >= lengths).all()
  assert (padded[lengths > 512] / lengths[lengths > 512]).max() <= 1.125 + 1e-9  # <= 12.5% padding past 16 blocks


def test_twenty_mixed_batches_compile_at_most_one_program_per_bucket(tiny_model):
  cfg, params, _ = tiny_model
  block, multiple = 4, 32  # rows and noisy windows padded to multiples of 32 tokens (config train.row_len_bucket)
  sc0 = step_lib.StepConfig(cfg, losses.LossConfig(), block, q_chunk=8)  # 8 divides none of most layout lengths
  rng = np.random.default_rng(0)
  keys = set()
  before = step_lib.logprobs._cache_size()
  for i in range(20):
    recs = records(rng, 3, max_prompt=24, max_response=60, block=block)
    mode = ("block_masked", "trajectory")[i % 2]
    rows = batch_lib.training_rows(recs, np.zeros(3), np.zeros(3), mode=mode, block_size=block, shrink=1, pad_id=0,
                                   row_multiple=16, len_multiple=multiple)
    b = rows.batch
    start = layout.noisy_start(b.noisy_masked, block, multiple)
    keys.add((b.tokens.shape, start))
    sc = step_lib.StepConfig(**{**sc0.__dict__, "noisy_start": start})
    logp = np.asarray(step_lib.logprobs(params, b.tokens, b.noisy_masked, b.valid, sc=sc))
    assert np.isfinite(logp).all() and (logp[b.scored] < 0).all()
  compiled = step_lib.logprobs._cache_size() - before
  row_buckets = batch_lib.length_buckets(24 + 60 + block, block, multiple)
  assert row_buckets == [32, 64, 96]
  layouts = [(16, length, length - n) for length in row_buckets for n in row_buckets if n <= length]  # 6
  assert keys <= {((rows, length), start) for rows, length, start in layouts}
  assert compiled == len(keys) <= len(layouts)
