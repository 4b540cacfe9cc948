"""A judge worker killed in the middle of a sandbox run leaves no process and no work directory behind."""

import secrets
import tempfile
import time
from pathlib import Path

import psutil

from lrl_jax.data import CodeRecord
from lrl_jax.rewards import Judge, JudgeConfig


def test_a_worker_killed_mid_run_is_cleaned_up_after():
  marker = f"lrlworkerloss{secrets.token_hex(4)}"
  program = ("```python\nimport os, sys, time\nif os.fork() == 0:\n    os.setsid()\n"
             f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(100)', '{marker}'])\n"
             "time.sleep(100)\n```")
  record = CodeRecord("x", "function", test_list=("assert f(1) == 1",), test_time_limit=1.0)
  # The sandbox would stop this run after 4.3 s; the pool kills the worker first, at 1 s.
  with Judge(JudgeConfig(workers=1, code_slack_s=-3.3)) as judge:
    start = time.monotonic()
    (result,) = judge.score([record], [program])
    elapsed = time.monotonic() - start
    pids = judge.pool.pids()
  assert result["correct"] is False and "timeout" in result["error"] and "killed" in result["error"]
  assert elapsed < 30  # far below the 100 s the program sleeps: nothing waited for it (slack for a loaded host)
  assert pids == []  # the killed worker was dropped
  survivors = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
  assert survivors == []
  assert not [p for p in Path(tempfile.gettempdir()).glob("lrl-sbx-*") if p.stat().st_mtime >= start - 1]
