"""The compiled decode loop against the uncached reference, batch invariance, TPF counting, sampling, compiles."""

import jax
import numpy as np
import pytest

from lrl_jax.decode import Decoder, DecodeConfig, DecodeError
from lrl_jax.weights import load_checkpoint, tiny
from tests.decode.reference import reference_decode
from tests.model.reference import hf_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30]]


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
  """A tiny checkpoint with peaky distributions (init std 0.3), our params and the torch reference model."""
  path = tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("sharp")), tiny.tiny_config(), seed=0, init_std=0.3)
  cfg, params, tok = load_checkpoint(path)
  return cfg, params, tok, hf_model(path)


def _check_against_reference(sharp, dcfg, prompts=PROMPTS):
  cfg, params, _, model = sharp
  records = Decoder(cfg, dcfg, batch_size=4).generate(params, prompts)
  for prompt, rec in zip(prompts, records):
    ids, steps, _ = reference_decode(model, prompt, block_size=dcfg.block_size, steps=dcfg.num_steps,
                                     strategy=dcfg.strategy, threshold=dcfg.threshold,
                                     max_new_tokens=dcfg.max_new_tokens, stop_ids=dcfg.stop_ids,
                                     mask_id=cfg.mask_token_id, entropy_budget=dcfg.entropy_budget)
    assert rec.response_ids.tolist() == ids and rec.step_map.tolist() == steps, prompt
    assert rec.num_forwards == len(set(steps))
  return records


@pytest.mark.parametrize("strategy,threshold", [("sequential", 0.9), ("low_confidence_static", 0.9),
                                                ("low_confidence_dynamic", 0.3), ("low_confidence_dynamic", 0.5),
                                                ("low_confidence_dynamic", 0.9), ("entropy_bounded", 0.9)])
@pytest.mark.parametrize("block_size", [4, 8])
def test_greedy_matches_uncached_reference(sharp, strategy, threshold, block_size):
  """Odd prompt lengths (partial first blocks), max_new_tokens=13 (not a multiple of B), half the steps of B."""
  dcfg = DecodeConfig(block_size=block_size, steps=block_size // 2, strategy=strategy, threshold=threshold,
                      greedy=True, max_new_tokens=13, entropy_budget=2.0)
  records = _check_against_reference(sharp, dcfg)
  assert all(r.length == 13 and r.truncated for r in records)


def test_stop_id_mid_block(sharp):
  cfg, params, _, _ = sharp
  base = DecodeConfig(block_size=4, greedy=True, max_new_tokens=16, threshold=0.5)
  free = Decoder(cfg, base, batch_size=4).generate(params, PROMPTS[:1])[0].response_ids.tolist()
  # a token whose first occurrence is not the last position of its block
  stop = next(t for j, t in enumerate(free) if (len(PROMPTS[0]) + j) % 4 < 3 and t not in free[:j])
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=16, threshold=0.5, stop_ids=(stop,))
  rec = _check_against_reference(sharp, dcfg, PROMPTS[:1])[0]
  assert rec.response_ids[-1] == stop and not rec.truncated and rec.length < 16
  # the whole block holding the stop was decoded; what follows the stop is kept only in decoded_ids
  assert len(rec.decoded_ids) > rec.length


@pytest.mark.slow
def test_batch_invariance_greedy_and_sampled(sharp):
  """A batch of mixed lengths decodes exactly as each prompt alone (same tokens, step_map, sampler log-probs)."""
  cfg, params, _, _ = sharp
  for dcfg in (DecodeConfig(block_size=4, greedy=True, max_new_tokens=11, threshold=0.4),
               DecodeConfig(block_size=4, temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=11, threshold=0.4)):
    together = Decoder(cfg, dcfg, batch_size=4).generate(params, PROMPTS, seed=3, with_logprobs=True)
    for i, prompt in enumerate(PROMPTS):
      alone = Decoder(cfg, dcfg, batch_size=2).generate(params, [prompt], seed=3, stream_ids=[i],
                                                       with_logprobs=True)[0]
      assert alone.response_ids.tolist() == together[i].response_ids.tolist()
      assert alone.step_map.tolist() == together[i].step_map.tolist()
      np.testing.assert_allclose(alone.logprobs, together[i].logprobs, atol=1e-5)


def test_group_members_differ_at_temperature_one(sharp):
  cfg, params, _, _ = sharp
  dcfg = DecodeConfig(block_size=4, temperature=1.0, max_new_tokens=12)
  records = Decoder(cfg, dcfg, batch_size=8).generate(params, [PROMPTS[1]] * 8, seed=0)
  assert len({tuple(r.response_ids.tolist()) for r in records}) >= 6


def test_sampling_distribution_matches_softmax(sharp):
  """Empirical frequencies of the first filled token (sequential, one per step) match the model's softmax."""
  import jax.numpy as jnp
  from lrl_jax.model import forward, logits
  cfg, params, _, _ = sharp
  prompt = [5, 6, 7, 8]
  n = 2000
  dcfg = DecodeConfig(block_size=4, strategy="sequential", temperature=1.0, max_new_tokens=1)
  records = Decoder(cfg, dcfg, batch_size=500).generate(params, [prompt] * n, seed=1)
  counts = np.bincount([int(r.response_ids[0]) for r in records], minlength=cfg.vocab_size) / n
  block = jnp.asarray([prompt + [cfg.mask_token_id] * 4])
  h, _ = forward(params, cfg, block, jnp.arange(8)[None])
  lg = logits(params, cfg, h)[0, 4].at[cfg.mask_token_id].set(-jnp.inf)
  probs = np.asarray(jax.nn.softmax(lg))
  # 4 sigma of a binomial proportion with n=2000, per token
  tol = 4 * np.sqrt(probs * (1 - probs) / n) + 1e-3
  assert (np.abs(counts - probs) <= tol).all()
  assert 0.5 * np.abs(counts - probs).sum() < 0.08  # total variation


def test_hand_computed_step_map_and_tpf(sharp):
  """Sequential with S = B/2 fills 2 tokens per forward: step_map [0,0,1,1,2,2,...], TPF 2."""
  cfg, params, _, _ = sharp
  dcfg = DecodeConfig(block_size=4, steps=2, strategy="sequential", greedy=True, max_new_tokens=8)
  rec = Decoder(cfg, dcfg, batch_size=1).generate(params, [[5, 6, 7, 8]])[0]
  assert rec.step_map.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  assert rec.num_forwards == 4 and rec.length / rec.num_forwards == 2.0
  assert rec.forwards_total == 4 + 1  # one commit between the two blocks; the last block is not committed
  # partial first block: prompt of 3 leaves 1 masked position, then one full block; 5 tokens, 1 + 2 forwards
  rec = Decoder(cfg, DecodeConfig(block_size=4, steps=2, strategy="sequential", greedy=True, max_new_tokens=5),
                batch_size=1).generate(params, [[5, 6, 7]])[0]
  assert rec.step_map.tolist() == [0, 1, 1, 2, 2] and rec.num_forwards == 3


def _spec_counts(prompt_len, block_size, steps, budget):
  """Tokens each denoising forward fills under SPEC §4.3 with an exact-count strategy, written out by hand:
  n_s = B // S (+1 in the first B % S steps) in every block, capped by what is still masked."""
  counts = []
  for start in range(prompt_len // block_size * block_size, prompt_len + budget, block_size):
    left = block_size - max(prompt_len - start, 0)
    for s in range(steps):
      if left == 0:
        break
      took = min(block_size // steps + (1 if s < block_size % steps else 0), left)
      counts.append(took)
      left -= took
  return counts


# the issue-23 prompt [161, 28, 37] (161 folded into the tiny vocab) and every first-block fill of B 8
B8_PROMPTS = [[161 % 128, 28, 37]] + [[40 + j for j in range(n)] for n in (1, 2, 4, 5, 6, 7, 8, 9, 14)]


@pytest.mark.parametrize("strategy", ["sequential", "low_confidence_static"])
def test_partly_filled_first_block_follows_spec_schedule(sharp, strategy):
  """B 8 / S 4: prompt [161, 28, 37] leaves 5 masked in its first block; SPEC (and the authors' decoders) fill
  2, 2, 1 (3 forwards), not the 2, 1, 1, 1 of a schedule derived from the masked count. Budgets end on a block
  boundary so every filled token is in the record."""
  cfg, params, _, _ = sharp
  dcfg = DecodeConfig(block_size=8, steps=4, strategy=strategy, greedy=True, max_new_tokens=24)
  budgets = [16 + (-len(p)) % 8 for p in B8_PROMPTS]
  records = Decoder(cfg, dcfg, batch_size=4).generate(params, B8_PROMPTS, max_new_tokens=budgets)
  for prompt, budget, rec in zip(B8_PROMPTS, budgets, records):
    counts = _spec_counts(len(prompt), 8, 4, budget)
    got = [rec.step_map.tolist().count(f) for f in range(max(rec.step_map.tolist()) + 1)]
    assert got == counts, (prompt, got, counts)
    assert rec.num_forwards == len(counts)
    if strategy == "sequential":
      assert rec.step_map.tolist() == sorted(rec.step_map.tolist())
  assert records[0].num_forwards == 3 + 4 + 4  # 11 forwards, as the authors' decoders; 12 before the fix


def test_no_recompile_after_warmup(sharp):
  cfg, params, _, _ = sharp
  dec = Decoder(cfg, DecodeConfig(block_size=4, greedy=True, max_new_tokens=8), batch_size=4, max_prompt_len=16)
  dec.warm_up(params)
  programs = dec.scheduler.programs[2:]
  before = [p._cache_size() for p in programs]
  for prompts in ([[5]], [[5, 6, 7, 8, 9, 10, 11]], PROMPTS, [[9] * 16, [4]], [[6] * 5] * 7):
    dec.generate(params, prompts, seed=len(prompts))
  assert [p._cache_size() for p in programs] == before  # compiled programs, not just traces


@pytest.mark.parametrize("kwargs,match", [({"strategy": "fastest"}, "strategy"), ({"block_size": 3}, "block_size"),
                                          ({"steps": 9}, "steps"), ({"top_p": 0.0}, "top_p")])
def test_bad_settings(sharp, kwargs, match):
  cfg = sharp[0]
  with pytest.raises(DecodeError, match=match):
    Decoder(cfg, DecodeConfig(**{"block_size": 8, **kwargs}))


def test_bad_prompts(sharp):
  cfg, params, _, _ = sharp
  dec = Decoder(cfg, DecodeConfig(block_size=4, max_new_tokens=8))
  with pytest.raises(DecodeError, match="empty"):
    dec.generate(params, [[5], []])
  with pytest.raises(DecodeError, match="max_position_embeddings"):
    dec.generate(params, [[5] * cfg.max_position_embeddings])
  no_mask = type(cfg)(**{**cfg.__dict__, "mask_token_id": None})
  with pytest.raises(DecodeError, match="mask_token_id"):
    Decoder(no_mask, DecodeConfig(block_size=4))


def test_auto_attention_is_xla_off_gpu(sharp):
  cfg = sharp[0]
  assert Decoder(cfg, DecodeConfig(block_size=4, attn_impl="auto")).dcfg.attn_impl == "xla"
  with pytest.raises(DecodeError, match="attn_impl"):
    Decoder(cfg, DecodeConfig(block_size=4, attn_impl="cuda"))
