"""The rollout layout on 8 host devices: each device decodes its own slots (per-device FLOPs 1/8 of one device's for
the same slots) and a denoising forward runs no collective but tensor-parallel ones."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_engine_is_data_parallel_with_tensor_collectives_only():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.decode.layout_run"], env=env, cwd=ROOT, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one = out["one"]["flops"]
  for name in ("data8", "fsdp8", "dp4_tp2"):  # 16 slots over 8 devices (dp4_tp2: 4 slot shards x 2 tensor halves)
    assert abs(out[name]["flops"] / one - 1 / 8) <= 0.05 / 8, (name, out[name]["flops"] / one)
  for name in ("data8", "fsdp8"):
    assert sum(out[name]["collectives"].values()) == 0, out[name]
  assert sum(out["dp4_tp2"]["collectives"].values()) > 0
  assert out["dp4_tp2"]["group_sizes"] == [2], out["dp4_tp2"]  # every collective within a tensor pair
