"""The judge's worker pool: results in order, failures contained, dead or late workers replaced; no JAX imported."""

import subprocess
import sys
from pathlib import Path

from lrl_jax.rewards.pool import WorkerPool

ROOT = Path(__file__).resolve().parents[2]


def test_results_in_order_and_failures_are_values():
  pool = WorkerPool(2)
  done = []
  try:
    results = pool.run([("math:sqrt", 9.0), ("math:sqrt", -1.0), ("os:_exit", 3), ("math:factorial", 5)], 30,
                       on_done=lambda i, ok, v: done.append(i))
    assert results[0] == (True, 3.0) and results[3] == (True, 120)
    assert results[1] == (False, "ValueError: math domain error")
    assert results[2] == (False, "worker died (exit code 3)")
    assert sorted(done) == [0, 1, 2, 3]
    assert len(pool.pids()) <= 2
    assert pool.run([("math:sqrt", 4.0)] * 5, 30) == [(True, 2.0)] * 5
  finally:
    pool.close()
  assert pool.pids() == []


def test_reward_and_data_modules_do_not_import_jax():
  code = ("import sys, lrl_jax.data, lrl_jax.data.download, lrl_jax.rewards, lrl_jax.reward\n"
          "from lrl_jax.rewards.pool import WorkerPool\n"
          "p = WorkerPool(1, preload=('lrl_jax.rewards.judge',))\n"
          "assert p.run([('sys:modules.__contains__', 'jax')], 60) == [(True, False)]\n"
          "p.close()\n"
          "assert 'jax' not in sys.modules, 'jax imported'\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
