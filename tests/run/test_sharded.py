"""The sharded RL update on 8 CPU devices (data 2 × fsdp 2 × tensor 2) gives the 1-device parameters (fp32, 1e-5),
with gradients sharded like the params."""

import json
import os
import subprocess
import sys

import numpy as np

from lrl_jax.plan.jobs import CPU_XLA_FLAGS


def _run(*mesh):
  """One sharded_run subprocess; XLA's quick CPU compiles (both runs alike: the programs are mostly compiling)."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {CPU_XLA_FLAGS}", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "tests.run.sharded_run", *map(str, mesh)], env=env, check=True,
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_device_step_matches_one_device():
  one, eight = _run(1, 1, 1), _run(2, 2, 2)
  assert one["devices"] == 1 and eight["devices"] == 8
  assert any("fsdp" in s or "tensor" in s for s in eight["shardings"])  # really sharded
  assert eight["grads_like_params"]  # accumulated gradients sharded like the params, not replicated
  assert one["params"].keys() == eight["params"].keys()
  for name in one["params"]:
    a, b = np.asarray(one["params"][name]), np.asarray(eight["params"][name])
    assert np.abs(a - b).max() <= 1e-5, name
  assert one["moved"] > 1e-4  # the two updates really changed the parameters
