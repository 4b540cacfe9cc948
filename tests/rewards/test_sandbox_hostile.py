"""Hostile programs in the sandbox: each is contained within its deadline and never passes; afterwards no stray
process, the judge's processes and files outside the sandbox are untouched, nothing reached the network."""

import os
import secrets
import socket
import subprocess
import threading

import psutil
import pytest

from lrl_jax.rewards import Judge, JudgeConfig, SandboxConfig
from lrl_jax.rewards.code_reward import build_task
from lrl_jax.rewards.isolation import private_uid_range
from lrl_jax.rewards.judge import EVALUATE_CODE
from lrl_jax.rewards.sandbox import PER_TEST_OVERHEAD_S

from .hostile_programs import FUNCTION, STDIO

LIMIT_S = 1.0
SANDBOX = SandboxConfig()


def _listen() -> tuple[socket.socket, list[bytes]]:
  """A TCP server on the host loopback recording whatever reaches it."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  server.settimeout(0.2)
  received: list[bytes] = []

  def serve():
    while server.fileno() >= 0:
      try:
        conn, _ = server.accept()
      except (TimeoutError, OSError):
        continue
      received.append(conn.recv(100) or b"<connected>")
      conn.close()

  threading.Thread(target=serve, daemon=True).start()
  return server, received


def _fill(code: str, values: dict[str, str]) -> str:
  for key, value in values.items():
    code = code.replace(key, value)
  return code


def _deadline(n_tests: int) -> float:
  return SANDBOX.startup_s + n_tests * (LIMIT_S + PER_TEST_OVERHEAD_S)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
  """Run every hostile program once (in parallel through the judge's pool) and record what happened around it."""
  marker, secret = f"lrlhostile{secrets.token_hex(6)}", secrets.token_hex(16)
  canary_dir = tmp_path_factory.mktemp("canary")
  canary_dir.chmod(0o755)
  canary = canary_dir / "canary.txt"
  canary.write_text("intact")
  canary.chmod(0o644)
  server, received = _listen()
  values = {"MARKER": marker, "SECRET": secret, "PORT": str(server.getsockname()[1]),
            "CANARYDIR": str(canary_dir), "CANARY": str(canary)}
  tasks, names = [], []
  for name, (code, tests) in FUNCTION.items():
    tasks.append(build_task("function", _fill(code, values), tuple(_fill(t, values) for t in tests), (), (),
                            LIMIT_S, SANDBOX))
    names.append(name)
  for name, (code, pairs) in STDIO.items():
    tasks.append(build_task("stdio", code, (), tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), LIMIT_S,
                            SANDBOX))
    names.append(name)
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("LRL_HOSTILE_SECRET", secret)
    with Judge(JudgeConfig(workers=4)) as judge:
      layers = judge.pool.run([("lrl_jax.rewards.sandbox:active_layers", SANDBOX)] * 4, 60)
      workers = judge.pool.pids()
      results = judge.pool.run([(EVALUATE_CODE, t) for t in tasks], [_deadline(len(t.tests)) + 10 for t in tasks])
      workers_after = judge.pool.pids()
      workers_alive = all(psutil.pid_exists(pid) for pid in workers_after)
      sanity = judge.score(*_one_correct_program())
  server.close()
  low, high = private_uid_range()
  stray = [p.info for p in psutil.process_iter(["pid", "uids", "cmdline"])
           if marker in " ".join(p.info["cmdline"] or []) or (p.info["uids"] and low <= p.info["uids"].real <= high)]
  leftovers = [str(p) for d in ("/tmp", "/var/tmp", "/dev/shm") for p in os.listdir(d) if marker in p]
  return {"names": names, "tasks": tasks, "results": dict(zip(names, results)), "layers": layers, "secret": secret,
          "workers": (workers, workers_after, workers_alive), "sanity": sanity, "stray": stray, "received": received,
          "canary": (canary_dir, canary), "leftovers": leftovers}


def _one_correct_program():
  from lrl_jax.data import CodeRecord
  record = CodeRecord("double", "function", test_list=("assert f(2) == 4",))
  return [record], ["```python\ndef f(x):\n    return 2 * x\n```"]


def test_there_are_at_least_thirty_hostile_programs():
  assert len(FUNCTION) + len(STDIO) >= 30


@pytest.mark.parametrize("name", list(FUNCTION) + list(STDIO))
def test_contained_and_never_a_pass(outcome, name):
  ok, reply = outcome["results"][name]
  assert ok, f"the judge worker itself failed: {reply}"
  assert not any(reply["passed"]), reply
  n_tests = len(outcome["tasks"][outcome["names"].index(name)].tests)
  assert reply["elapsed_s"] <= _deadline(n_tests) + 1.5, reply


def test_no_process_survives(outcome):
  assert outcome["stray"] == []


def test_files_outside_the_sandbox_are_untouched(outcome):
  canary_dir, canary = outcome["canary"]
  assert canary.read_text() == "intact" and oct(canary.stat().st_mode & 0o777) == oct(0o644)
  assert sorted(p.name for p in canary_dir.iterdir()) == ["canary.txt"]
  assert outcome["leftovers"] == []


def test_secrets_and_network_stay_out_of_reach(outcome):
  assert outcome["received"] == []
  reasons = " ".join(" ".join(reply["reasons"]) for _, reply in outcome["results"].values())
  assert outcome["secret"] not in reasons


def test_the_judge_survives_its_guests(outcome):
  before, after, alive = outcome["workers"]
  assert before == after and alive
  assert outcome["sanity"][0]["correct"]


def test_strongest_layers_are_used_where_the_machine_permits(outcome):
  layers = set(outcome["layers"])
  assert len(layers) == 1 and all(ok for ok, _ in outcome["layers"])
  (description,) = {d for _, d in outcome["layers"]}
  can_unshare = subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
  if os.geteuid() == 0:
    assert "private uid" in description
  if os.geteuid() == 0 and can_unshare:
    assert "net+ipc+mount namespaces" in description
  else:
    assert "namespaces" in description or "audit-hook guards(net" in description
