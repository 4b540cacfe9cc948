"""`python -m lrl_jax.bench rollout` at a tiny workload: the table, the ratios, interleaved repeats, the stop-token
mode against the dense static loop (identical records), and no compiles after warm-up."""

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import dispatch, monitoring

from lrl_jax.bench import dense_loop, rollout, shapes
from lrl_jax.decode import Decoder, DecodeConfig
from lrl_jax.model import init_params

TINY = ["--preset=cpu-small", "--layers=1", "--hidden=64", "--heads=2", "--kv_heads=1", "--head_dim=32",
        "--intermediate=128", "--vocab=128", "--requests=6", "--batch=2", "--prompt_len=8", "--block_size=4",
        "--max_new_tokens=16", "--median=6", "--forwards_per_call=4"]


@pytest.mark.slow
def test_repeats_report_the_median_run_of_each_engine():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert rollout.main([*TINY, "--engines=static,engine", "--repeats=3"]) == 0
  text = out.getvalue()
  rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (static|engine) \| ([\d.]+) \|", text, re.M)}
  for name in ("static", "engine"):
    runs = re.search(rf"^{name} seconds per run: (.+) \(median reported\)$", text, re.M)
    assert runs, text
    seconds = sorted(float(x) for x in runs.group(1).split(", "))
    assert len(seconds) == 3 and rows[name] == seconds[1], text  # the table shows the median run
  assert re.search(r"^engine / static tokens/s: [\d.]+x$", text, re.M), text


def test_median_run():
  runs = [{"seconds": 3.0, "i": 0}, {"seconds": 1.0, "i": 1}, {"seconds": 2.0, "i": 2}]
  assert rollout.median_run(runs)["i"] == 2
  assert rollout.median_run(runs + [{"seconds": 0.5, "i": 3}])["i"] == 1  # even count: the lower middle
  assert rollout.median_run(runs[:1])["i"] == 0


STOP = [*TINY, "--lengths=stop", "--stop_tokens=12", "--prompt_min=1", "--max_new_tokens=24"]


def test_stop_mode_engine_against_the_dense_loop():
  """Lengths from the model's own stop ids at temperature 1: both engines print their row, the records agree, the
  ratio comes last; static batches of budgets are refused in this mode."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert rollout.main([*STOP, "--engines=engine,dense"]) == 0
  text = out.getvalue()
  for name in ("engine", "dense"):
    assert re.search(rf"^\| {name} \| [\d.]+ \| \d+ \| [\d.]+ \| [\d.]+ \| \d+ \| [\d.]+% \| [\d.]+% \|", text, re.M), text
  assert "records identical (engine, dense): True" in text
  lengths = re.search(r"^response lengths: mean [\d.]+, median \d+, max (\d+), (\d+) of 6 ran", text, re.M)
  assert lengths and int(lengths.group(2)) < 6, text  # some sequences ended on a stop id
  assert re.fullmatch(r"engine / dense tokens/s: [\d.]+x", text.strip().splitlines()[-1]), text
  assert rollout.main([*STOP, "--engines=static,engine"]) == 2  # a usage error


def _tiny_model():
  cfg = shapes.shape_config(dict(layers=2, hidden=64, heads=2, kv_heads=1, head_dim=32, intermediate=128, vocab=128), 4)
  return cfg, init_params(cfg, jax.random.key(0), jnp.float32)


def _prompts(n, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 100, rng.integers(1, 12)).tolist() for _ in range(n)]


@pytest.mark.parametrize("greedy,stops", [(True, 26), (False, 4)])
def test_dense_loop_records_equal_the_engines(greedy, stops):
  """The dense static loop (batches of 4, the last one padded) and the engine (3 slots) give identical records:
  same tokens, step maps and forward counts, greedy and sampled, with sequences ending on stop ids and on budgets."""
  cfg, params = _tiny_model()
  dcfg = DecodeConfig(block_size=4, greedy=greedy, max_new_tokens=24, stop_ids=tuple(range(100, 100 + stops)))
  prompts = _prompts(11)
  engine = Decoder(cfg, dcfg, batch_size=3, max_prompt_len=16, forwards_per_call=5).generate(params, prompts)
  dense, st = dense_loop.decode(params, cfg, dcfg, prompts, 4)
  assert dense == engine
  assert set(dense.truncated.tolist()) == {True, False}
  assert st.forwards > 0 and 0 < st.busy <= st.rows == 4 * st.forwards and 0 <= st.tail <= st.forwards


def test_no_compiles_after_warm_up():
  """After their warm-ups, the engine and the dense loop decode new prompts (other lengths, other slot fillings)
  without compiling anything: no backend compile at all in the timed region."""
  cfg, params = _tiny_model()
  dcfg = DecodeConfig(block_size=4, max_new_tokens=24, stop_ids=tuple(range(100, 126)))
  dec = Decoder(cfg, dcfg, batch_size=3, max_prompt_len=16, forwards_per_call=5)
  dec.warm_up(params)
  dec.generate(params, _prompts(3))
  dense_loop.decode(params, cfg, dcfg, _prompts(4), 4, prompt_cols=16)
  compiles = []
  listener = lambda event, seconds, **kw: compiles.append(event) if event == dispatch.BACKEND_COMPILE_EVENT else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    dec.generate(params, _prompts(13, seed=2), seed=3)
    dense_loop.decode(params, cfg, dcfg, _prompts(9, seed=2), 4, prompt_cols=16)
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert compiles == []
