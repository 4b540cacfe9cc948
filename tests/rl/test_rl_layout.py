"""The training layout reproduces the sampler: trajectory rows give the sampler's log-probs (~0 gap in float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.decode import Decoder, DecodeConfig
from lrl_jax.model import init_params
from lrl_jax.rl import layout, rows
from lrl_jax.weights import tiny_moe


def _logps(cfg, params, records, mode, block_size, start=0):
  seq_rows, toks = [], []
  for r in records:
    step_map = r.decoded_step_map
    seq_rows.append(rows.sequence_rows(mode, len(r.prompt_ids), step_map, r.length, block_size))
    toks.append(np.concatenate([r.prompt_ids, r.decoded_ids]))
  batch = rows.pad_rows(seq_rows, toks, pad_id=0)
  logp, ent = layout.row_logprobs(params, cfg, jnp.asarray(batch.tokens), jnp.asarray(batch.noisy_masked),
                                  jnp.asarray(batch.valid), block_size=block_size, start=start)
  return batch, np.asarray(logp), np.asarray(ent)


def test_trajectory_rows_reproduce_sampler_logprobs(tiny_model):
  cfg, params, _ = tiny_model
  dcfg = DecodeConfig(block_size=4, temperature=1.0, threshold=0.0085, max_new_tokens=14, stop_ids=(40,))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20]]
  records = Decoder(cfg, dcfg, batch_size=4).generate(params, prompts, seed=0, with_logprobs=True)
  assert any(len(set(r.step_map.tolist())) < r.length for r in records)  # some steps filled several tokens
  batch, logp, ent = _logps(cfg, params, records, "trajectory", 4)
  gaps = []
  for row in range(batch.tokens.shape[0]):
    rec = records[batch.row_to_seq[row]]
    p = len(rec.prompt_ids)
    for pos in np.flatnonzero(batch.scored[row]):
      gaps.append(abs(logp[row, pos] - rec.logprobs[pos - p]))
  assert len(gaps) == sum(r.length for r in records)  # each trainable token scored once
  assert max(gaps) <= 1e-5
  assert np.isfinite(ent[batch.valid]).all()


def test_noisy_start_is_the_bucketed_widest_masked_span():
  masked = np.zeros((3, 40), bool)
  masked[0, 21:30] = masked[1, 33:35] = True
  assert layout.noisy_start(masked, 4) == 40 - 12  # row 0 spans blocks 5..7 (positions 20..31)
  assert layout.noisy_start(masked[1:], 4) == 40 - 4  # one block
  masked[2, [2, 30]] = True
  assert layout.noisy_start(masked, 4) == 40 - 32  # row 2 spans positions 0..31: 8 blocks
  wide = np.zeros((2, 400), bool)
  wide[0, 100:300] = wide[1, 5:6] = True  # 200 positions from 100 -> 50 blocks of 4 -> bucket 52 blocks
  assert layout.noisy_start(wide, 4) == 400 - 208
  assert layout.noisy_start(wide, 4, multiple=64) == 400 - 256
  assert layout.noisy_start(np.zeros((2, 40), bool), 4) == 36  # nothing masked: one block
  starts = np.asarray(layout.row_starts(jnp.asarray(masked), 4))
  assert starts.tolist() == [20, 32, 0]


def test_router_stats_count_both_copies_of_the_rows_tokens_only():
  """An MoE model's router statistics in the layout count the clean row's valid tokens and the noisy window's valid
  ones: not the window's positions past a row's end, nor padding rows (every process pads its own micro-batches)."""
  cfg = tiny_moe.tiny_moe_config(top_k=2)
  params = init_params(cfg, jax.random.key(0))
  length, block = 16, 4
  tokens = np.random.default_rng(0).integers(4, cfg.vocab_size, (3, length)).astype(np.int32)
  valid = np.arange(length)[None] < np.array([[16], [11], [6]])
  masked = np.zeros_like(valid)
  masked[0, 9:14] = masked[1, 8:10] = masked[2, 4:6] = True
  start = layout.noisy_start(masked, block)  # a window of 8: rows 1 and 2 end inside theirs

  def stats(padding_rows: int):
    pad = lambda a: jnp.asarray(np.concatenate([a, np.zeros((padding_rows, length), a.dtype)]))
    return layout.row_logprobs(params, cfg, pad(tokens), pad(masked), pad(valid), block_size=block, start=start,
                               router_stats=True)[2]

  window = np.asarray(layout.row_starts(jnp.asarray(masked), block))[:, None] + np.arange(length - start)
  in_window = (window < length) & np.take_along_axis(valid, np.minimum(window, length - 1), 1)
  want = int(valid.sum() + in_window.sum())
  assert in_window.sum() < ((window < length).sum())  # some window positions lie past their row's end
  base, padded = stats(0), stats(3)
  assert np.all(np.asarray(base.tokens) == want) and np.all(np.asarray(base.load).sum(-1) == 2 * want)
  np.testing.assert_array_equal(padded.load, base.load)
  np.testing.assert_array_equal(padded.tokens, base.tokens)
  np.testing.assert_allclose(padded.prob, base.prob, rtol=1e-6)


@pytest.mark.slow
def test_cropped_noisy_copy_gives_the_same_logprobs(tiny_model):
  """Leaving the prompt's noisy blocks out is exact: the sampler's log-probs within 1e-5 at every scored token."""
  cfg, params, _ = tiny_model
  dcfg = DecodeConfig(block_size=4, temperature=1.0, threshold=0.0085, max_new_tokens=12, stop_ids=(40,))
  prompts = [list(range(5, 14)), list(range(20, 31)), list(range(40, 54))]  # 9, 11, 14 tokens
  records = Decoder(cfg, dcfg, batch_size=4).generate(params, prompts, seed=3, with_logprobs=True)
  for mode in rows.MODES:
    full, logp_full, _ = _logps(cfg, params, records, mode, 4)
    start = layout.noisy_start(full.noisy_masked, 4)
    assert start > 0
    _, logp_crop, ent = _logps(cfg, params, records, mode, 4, start=start)
    assert np.abs(logp_crop - logp_full)[full.scored].max() <= 1e-5
    outside = np.arange(full.tokens.shape[1]) < np.asarray(layout.row_starts(jnp.asarray(full.noisy_masked), 4))[:, None]
    assert (logp_crop[outside] == 0).all() and np.isfinite(ent).all()
  gaps = [abs(logp_crop[row, pos] - records[full.row_to_seq[row]].logprobs[pos - len(prompts[full.row_to_seq[row]])])
          for row in range(full.tokens.shape[0]) for pos in np.flatnonzero(full.scored[row])]
  assert max(gaps) <= 1e-5  # trajectory mode (last in MODES): still the sampler's states


def test_block_masked_differs_from_sampler_when_steps_fill_sequentially(tiny_model):
  """block_masked scores every token with its whole block masked: a diagnostic gap, not zero."""
  cfg, params, _ = tiny_model
  dcfg = DecodeConfig(block_size=4, temperature=1.0, strategy="sequential", max_new_tokens=8)
  records = Decoder(cfg, dcfg, batch_size=2).generate(params, [[5, 6, 7, 8]], seed=1, with_logprobs=True)
  batch, logp, _ = _logps(cfg, params, records, "block_masked", 4)
  scored = logp[0][batch.scored[0]]
  assert np.abs(scored[0] - records[0].logprobs[0]) <= 1e-5  # first token of a block: same state
  assert np.abs(scored - np.asarray(records[0].logprobs)).max() > 1e-3


def test_masked_lm_loss_sum_and_count(tiny_model):
  import jax
  cfg, params, _ = tiny_model
  tokens = jnp.asarray(np.random.default_rng(0).integers(4, 100, (2, 8)))
  valid = jnp.asarray([[True] * 8, [True] * 6 + [False] * 2])
  maskable = jnp.arange(8)[None] >= 3
  noisy = layout.random_block_masks(jax.random.key(0), maskable & valid, 4)
  total, count = layout.masked_lm_loss(params, cfg, tokens, noisy, valid, noisy, block_size=4)
  logp, _ = layout.row_logprobs(params, cfg, tokens, noisy, valid, block_size=4)
  assert int(count) == int(noisy.sum()) and np.isclose(float(total), -float(logp[noisy].sum()), rtol=1e-6)
  assert not bool((noisy & ~maskable).any())
