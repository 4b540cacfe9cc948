"""The continuous-batching engine: reference equality with fewer slots than prompts, invariance to slot, order and
neighbours, preemption under a small page pool, page accounting, per-request budgets, commit fusion, compiles, and
the CPU bench program's in-place pool."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.decode import Decoder, DecodeConfig, DecodeError
from lrl_jax.weights import load_checkpoint, tiny
from tests.decode.reference import reference_decode
from tests.model.reference import hf_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 26, 27, 28], [30], [40, 41, 42, 43, 44],
           [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61]]


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
  path = tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("sharp")), tiny.tiny_config(), seed=0, init_std=0.3)
  cfg, params, _ = load_checkpoint(path)
  return cfg, params, hf_model(path)


def _decoder(cfg, dcfg, slots=2, **kw):
  return Decoder(cfg, dcfg, batch_size=slots, max_prompt_len=16, forwards_per_call=kw.pop("forwards_per_call", 6), **kw)


@pytest.mark.parametrize("fuse", [False, True])
def test_fewer_slots_than_prompts_matches_reference(sharp, fuse):
  """Two slots, six prompts of 1-12 tokens (full and partial first blocks), refilled as sequences finish; a stop id
  ends some sequences mid-block; every record equals the uncached reference decoder's."""
  cfg, params, model = sharp
  dcfg = DecodeConfig(block_size=4, steps=2, threshold=0.5, greedy=True, max_new_tokens=13, stop_ids=(17,))
  records = _decoder(cfg, dcfg, fuse=fuse).generate(params, PROMPTS)
  for prompt, rec in zip(PROMPTS, records):
    ids, steps, _ = reference_decode(model, prompt, block_size=4, steps=2, strategy=dcfg.strategy, threshold=0.5,
                                     max_new_tokens=13, stop_ids=(17,), mask_id=cfg.mask_token_id)
    assert rec.response_ids.tolist() == ids and rec.step_map.tolist() == steps, prompt


def test_same_record_whatever_slot_order_and_neighbours(sharp):
  """Sampled (and so greedy a fortiori): each prompt gives the same tokens, step_map and sampler log-probs in a full
  batch, in reverse arrival order, beside another neighbour, with one slot, and fused; a stream depends only on
  its id."""
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=11, threshold=0.4)
  base = _decoder(cfg, dcfg, slots=3).generate(params, PROMPTS, seed=3, with_logprobs=True)
  order = list(reversed(range(len(PROMPTS))))
  runs = {
      "reversed": list(_decoder(cfg, dcfg, slots=3).generate(params, [PROMPTS[i] for i in order], seed=3,
                                                              stream_ids=order, with_logprobs=True))[::-1],
      "other neighbour": [_decoder(cfg, dcfg, slots=3).generate(params, [p, PROMPTS[0]], seed=3, stream_ids=[i, 99],
                                                                with_logprobs=True)[0] for i, p in enumerate(PROMPTS)],
      "one slot": _decoder(cfg, dcfg, slots=1).generate(params, PROMPTS, seed=3, with_logprobs=True),
      "fused": _decoder(cfg, dcfg, slots=3, fuse=True).generate(params, PROMPTS, seed=3, with_logprobs=True),
  }
  assert len({tuple(r.response_ids.tolist()) for r in base}) == len(PROMPTS)
  for name, records in runs.items():
    for want, got in zip(base, records):
      assert got.response_ids.tolist() == want.response_ids.tolist(), name
      assert got.step_map.tolist() == want.step_map.tolist(), name
      np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5, err_msg=name)


def test_preemption_under_a_small_pool_gives_identical_records(sharp):
  """A pool of 12 pages for 3 slots of up to 8 pages each forces preemptions; every (sampled) record equals the
  unconstrained run's, and no page leaks."""
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, temperature=1.0, max_new_tokens=16, threshold=0.6)
  prompts = [p for p in PROMPTS if len(p) > 2] * 2
  free = _decoder(cfg, dcfg, slots=3).generate(params, prompts, seed=7, with_logprobs=True)
  small = _decoder(cfg, dcfg, slots=3, pool_tokens=12 * 4, keep_state=True)  # kept to count its free pages
  tight = small.generate(params, prompts, seed=7, with_logprobs=True)
  assert small.stats.preemptions > 0
  for want, got in zip(free, tight):
    assert got.response_ids.tolist() == want.response_ids.tolist() and got.step_map.tolist() == want.step_map.tolist()
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
  pool = small.scheduler._pool
  assert int(pool.num_free.sum()) == small.scheduler.shape.pages
  assert sorted(np.asarray(pool.free).tolist()) == list(range(small.scheduler.shape.pages))  # each page once


def test_kv_pages_held_track_tokens_held(sharp):
  """At the busiest call boundary, pages in use hold at most one partly filled page per live slot beyond the
  cached tokens."""
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=16, threshold=0.9)
  dec = _decoder(cfg, dcfg, slots=3, page_size=8, forwards_per_call=3)
  dec.generate(params, PROMPTS)
  st, page = dec.stats, dec.scheduler.shape.page_size
  assert st.peak_pages > 0
  assert st.peak_pages * page <= st.peak_tokens_held + 3 * page


def test_per_request_budgets(sharp):
  cfg, params, model = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=12, threshold=0.5)
  budgets = [1, 5, 12, 7, 3, 9]
  records = _decoder(cfg, dcfg).generate(params, PROMPTS, max_new_tokens=budgets)
  for prompt, budget, rec in zip(PROMPTS, budgets, records):
    ids, steps, _ = reference_decode(model, prompt, block_size=4, steps=4, strategy=dcfg.strategy, threshold=0.5,
                                     max_new_tokens=budget, stop_ids=(), mask_id=cfg.mask_token_id)
    assert rec.response_ids.tolist() == ids and rec.step_map.tolist() == steps and len(ids) == budget and rec.truncated
  with pytest.raises(DecodeError, match="max_new_tokens=13"):
    _decoder(cfg, dcfg).generate(params, PROMPTS[:1], max_new_tokens=[13])


def test_commit_fusion_saves_forwards_and_keeps_counts(sharp):
  """Fusing a commit with the next block's first step: same records (forwards_total still counts the commits as
  before), fewer model calls."""
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=16, threshold=0.9)
  plain, fused = _decoder(cfg, dcfg, slots=2), _decoder(cfg, dcfg, slots=2, fuse=True)
  a, b = plain.generate(params, PROMPTS), fused.generate(params, PROMPTS)
  assert a == b
  assert fused.stats.forwards < plain.stats.forwards


def test_pool_too_small_for_a_prompt_names_the_setting(sharp):
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=8)
  with pytest.raises(DecodeError, match="pool_tokens=8"):
    _decoder(cfg, dcfg, pool_tokens=8).generate(params, [[5] * 12])


def _warmed(cfg, params, dcfg, slots):
  """A warmed-up Decoder, its jitted engine programs and their compiled-executable counts after warm-up."""
  dec = _decoder(cfg, dcfg, slots=slots)
  dec.warm_up(params)
  compiled = dec.scheduler.programs[2:]
  return dec, compiled, [p._cache_size() for p in compiled]


def test_no_recompile_after_warm_up(sharp):
  """After warm_up, runs over mixed prompt lengths, budgets and batch fillings compile nothing new."""
  cfg, params, _ = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=12, threshold=0.7)
  dec, compiled, before = _warmed(cfg, params, dcfg, slots=4)
  for prompts, budgets in ((PROMPTS, None), (PROMPTS[:1], [3]), ([[9] * 16, [4]], [12, 1]), ([[6] * 5] * 7, None)):
    dec.generate(params, prompts, seed=len(prompts), max_new_tokens=budgets)
  assert [p._cache_size() for p in compiled] == before
  assert dec.scheduler.buckets() == [8]  # 16 + 12 tokens in pages of 4: one chunk of the page walk


def test_one_engine_serves_every_threshold_and_holds_nothing_between_calls(sharp):
  """θ is a call argument: one warmed-up Decoder decodes at three thresholds without compiling anything new, each
  run equal to the reference decoder at that θ; between calls no engine buffer stays on the device."""
  cfg, params, model = sharp
  dcfg = DecodeConfig(block_size=4, greedy=True, max_new_tokens=12, threshold=0.9)
  dec, compiled, before = _warmed(cfg, params, dcfg, slots=3)
  live = jax.live_arrays()
  step_maps = set()
  for th in (0.9, 0.5, 0.1):
    records = dec.generate(params, PROMPTS, threshold=th)
    for prompt, rec in zip(PROMPTS, records):
      ids, steps, _ = reference_decode(model, prompt, block_size=4, steps=4, strategy=dcfg.strategy, threshold=th,
                                       max_new_tokens=12, stop_ids=(), mask_id=cfg.mask_token_id)
      assert rec.response_ids.tolist() == ids and rec.step_map.tolist() == steps, (th, prompt)
    step_maps.add(tuple(tuple(r.step_map.tolist()) for r in records))
  assert len(step_maps) == 3  # the thresholds really decode differently
  assert [p._cache_size() for p in compiled] == before
  assert dec.resident_bytes == 0
  after = jax.live_arrays()
  assert (len(after), sum(x.nbytes for x in after)) == (len(live), sum(x.nbytes for x in live))
  del live, after


def _bench_engine_program(pool_tokens=None):
  """The engine program the CPU rollout bench runs (cpu-small, block 4, 32 slots, prompts up to 40 + 512 new tokens,
  sampling with stop ids), compiled for the widest page-table bucket; with its pool (a ShapeDtypeStruct)."""
  from lrl_jax.bench import shapes
  from lrl_jax.decode import slots as slots_lib
  from lrl_jax.model import init_params

  cfg = shapes.preset_config("cpu-small", 4)
  sch = Decoder(cfg, DecodeConfig(block_size=4, max_new_tokens=512, stop_ids=(4000,)), batch_size=32,
                max_prompt_len=40, pool_tokens=pool_tokens).scheduler
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), jnp.float32))
  slots, pool = jax.eval_shape(lambda: (slots_lib.init_slots(sch.shape),
                                        slots_lib.init_pool(cfg, sch.shape, jnp.float32)))
  scalar = lambda dt: jax.ShapeDtypeStruct((), dt)
  compiled = sch.programs.run.lower(params, slots, pool, scalar(jnp.int32), scalar(jnp.bool_), scalar(jnp.float32),
                                    cfg=cfg, dcfg=sch.dcfg.compiled(), shape=sch.shape,
                                    bucket=sch.shape.max_pages).compile()
  return compiled, pool, cfg


def test_engine_compiled_for_cpu_copies_no_layer_of_the_pool():
  """The CPU engine reads pages in place and writes each window's keys/values in place: no instruction makes an
  array as large as one layer's keys except the in-place scatters, and (with a pool 8x every slot full, so that
  one layer dwarfs the weights' and sampler's temporaries) its temporaries stay below a quarter of one layer."""
  compiled, pool, cfg = _bench_engine_program()
  layer = pool.k.size // cfg.num_layers
  made = re.findall(r"= f32\[([\d,]+)\]\{[\d,]*\} ([\w-]+)\((?:[^\n]*?calls=%([\w.-]+))?", compiled.as_text())
  large = {(op, callee.split(".")[0]) for shape, op, callee in made if math.prod(map(int, shape.split(","))) >= layer}
  assert large <= {("fusion", "wrapped_scatter_computation"), ("scatter", ""), ("bitcast", ""), ("parameter", ""),
                   ("get-tuple-element", "")}, large
  compiled, pool, cfg = _bench_engine_program(pool_tokens=8 * 32 * 552)
  layer_bytes = pool.k.size // cfg.num_layers * 4
  assert compiled.memory_analysis().temp_size_in_bytes < layer_bytes / 4
