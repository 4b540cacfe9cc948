"""`python -m lrl_jax.bench rollout` at a tiny workload: the table, the ratios, and interleaved repeats."""

import contextlib
import io
import re

from lrl_jax.bench import rollout

TINY = ["--preset=cpu-small", "--layers=1", "--hidden=64", "--heads=2", "--kv_heads=1", "--head_dim=32",
        "--intermediate=128", "--vocab=128", "--requests=6", "--batch=2", "--prompt_len=8", "--block_size=4",
        "--max_new_tokens=16", "--median=6", "--forwards_per_call=4"]


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
