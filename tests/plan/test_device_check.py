"""launch/device_check.sh on the CPU with tiny shapes: every check runs and lands in one results file."""

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_device_check_tiny(tmp_path):
  results = tmp_path / "device_check.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(["bash", "launch/device_check.sh", "--tiny", f"--out={results}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1500)
  out = json.loads(results.read_text())
  checks = {c["name"]: c for c in out["checks"]}
  assert out["tiny"] and list(checks) == ["env", "parity", "kernels", "bench_rollout", "bench_stop",
                                          "bench_train"], proc.stdout
  for name in ("env", "parity", "kernels", "bench_train"):
    assert checks[name]["status"] == "ok", (name, checks[name]["tail"])
  assert "1 passed" in "\n".join(checks["parity"]["tail"]) and "1 passed" in "\n".join(checks["kernels"]["tail"])
  assert any("| jax |" in line for line in checks["bench_train"]["tail"])
  rollout = checks["bench_rollout"]
  assert rollout["status"] == "ok" and any(line.startswith("engine / static tokens/s") for line in rollout["tail"]), rollout["tail"]
  stop = checks["bench_stop"]
  assert stop["status"] == "ok" and stop["tail"][-1].startswith("engine_xla / dense tokens/s"), stop["tail"]
  assert any(line.startswith("records identical (engine, dense): True") for line in stop["tail"]), stop["tail"]
  assert proc.returncode == (0 if all(c["status"] == "ok" for c in checks.values()) else 1)
  assert "results: " in proc.stdout.splitlines()[-1]


def test_device_check_bad_argument():
  proc = subprocess.run(["bash", "launch/device_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip() == "error: --fast: unknown argument (use --tiny, --out FILE)"
