"""Fallback layers, forced on: without namespaces sockets are refused in the child; without a private uid,
process creation, signals to others, writes outside the work directory and other processes' files are refused.
Also the unprivileged path (a non-root user) and the environment switch."""

import json
import os
import shutil
import subprocess
from pathlib import Path

from lrl_jax.rewards import SandboxConfig
from lrl_jax.rewards.code_reward import build_task
from lrl_jax.rewards.judge import EVALUATE_CODE
from lrl_jax.rewards.pool import WorkerPool

from .test_sandbox_hostile import _listen

ROOT = Path(__file__).resolve().parents[2]
NO_NET = SandboxConfig(namespaces=False)
BARE = SandboxConfig(namespaces=False, private_uid=False)
SOCKET_PROGRAM = ("import socket\ndef connected():\n    s = socket.socket()\n    s.settimeout(0.5)\n"
                  "    s.connect(('127.0.0.1', PORT))\n    return True\n")


def _run(judge, config, programs):
  """Run function-mode programs (code, tests) under `config`; the workers' per-test verdicts."""
  tasks = [build_task("function", code, tests, (), (), 1.0, config) for code, tests in programs]
  return [reply for ok, reply in judge.pool.run([(EVALUATE_CODE, t) for t in tasks], 60)]


def test_without_namespaces_sockets_are_refused_in_the_child(judge):
  server, received = _listen()
  code = SOCKET_PROGRAM.replace("PORT", str(server.getsockname()[1]))
  (layers,) = {d for _, d in judge.pool.run([("lrl_jax.rewards.sandbox:active_layers", NO_NET)] * 4, 60)}
  refused, legit = _run(judge, NO_NET, [(code, ("assert connected() == True",)),
                                        ("def f(x):\n    return 2 * x\n", ("assert f(2) == 4",))])
  server.close()
  assert "audit-hook guards(net)" in layers and "namespaces" not in layers
  assert refused["passed"] == [False] and "network access is disabled" in refused["reasons"][0]
  assert received == []
  assert legit["passed"] == [True]


def test_without_a_private_uid_the_child_cannot_touch_the_outside(judge, tmp_path):
  victim = subprocess.Popen(["sleep", "60"])
  canary = tmp_path / "canary.txt"
  canary.write_text("intact")
  programs = {
    "fork": ("import os\nos.fork()\n", "os.fork is not allowed"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])\n", "not allowed"),
    "kill": (f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)\n", "os.kill is not allowed"),
    "write": (f"open('{canary}', 'w').write('pwned')\n", "writing outside the work directory"),
    "remove": (f"import os\nos.remove('{canary}')\n", "os.remove outside the work directory"),
    "environ": ("import os\nopen(f'/proc/{os.getppid()}/environ').read()\n", "other processes are not readable"),
    "ctypes": ("import ctypes\n", "not allowed"),
    "inside": ("open('ok.txt', 'w').write('fine')\ndef f(x):\n    return 2 * x\n", None),
  }
  replies = _run(judge, BARE, [(code, ("assert f(2) == 4",)) for code, _ in programs.values()])
  (layers,) = {d for _, d in judge.pool.run([("lrl_jax.rewards.sandbox:active_layers", BARE)] * 4, 60)}
  alive = victim.poll() is None
  victim.kill()
  victim.wait()
  assert "audit-hook guards(net,proc,fs)" in layers and "private uid" not in layers
  for (name, (_, reason)), reply in zip(programs.items(), replies):
    if reason is None:
      assert reply["passed"] == [True], name
    else:
      assert reply["passed"] == [False] and reason in reply["reasons"][0], (name, reply)
  assert alive and canary.read_text() == "intact"


def test_environment_switch_disables_namespaces(monkeypatch):
  monkeypatch.setenv("LRL_SANDBOX_NAMESPACES", "0")
  pool = WorkerPool(1)
  try:
    [(ok, layers)] = pool.run([("lrl_jax.rewards.sandbox:active_layers", None)], 60)
  finally:
    pool.close()
  assert ok and "audit-hook guards(net" in layers


UNPRIVILEGED_SCRIPT = """
import json, sys
from lrl_jax.rewards.sandbox import detect_layers, run_tests
code = sys.argv[1]
result = run_tests("function", code, [("value", "connected()")], 1.0)
print(json.dumps({"layers": detect_layers().describe(), "uid": __import__("os").getuid(),
                  "status": result.tests[0].status, "payload": result.tests[0].payload.decode()}))
"""


def test_an_unprivileged_user_still_gets_no_network(judge):
  """As root this runs the sandbox as `nobody` (user+net namespaces where permitted, else the audit hook);
  as a normal user the judge's own workers already are that case."""
  server, received = _listen()
  code = SOCKET_PROGRAM.replace("PORT", str(server.getsockname()[1]))
  setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
  if os.geteuid() == 0 and setpriv and os.access(python, os.X_OK):
    done = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c",
                           UNPRIVILEGED_SCRIPT, code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["uid"] == 65534
  else:
    reply = _run(judge, SandboxConfig(), [(code, ("assert connected() == True",))])[0]
    out = {"status": "fail", "payload": reply["reasons"][0], "layers": "", "uid": os.getuid()}
  server.close()
  assert out["status"] == "fail", out
  assert "Network is unreachable" in out["payload"] or "network access is disabled" in out["payload"], out
  assert received == []
