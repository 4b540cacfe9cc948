"""The expert-parallel dispatch (`model/moe_dispatch.py`) against the unsharded block: on 8 host devices (a
subprocess: moe_dispatch_run.py) a scanned, rematerialised 2-layer MoE stack's value and gradients, fp32 ≤ 1e-5,
with no expert weight gathered over `expert`; greedy decode records on (data 2, expert 4) equal one device's (marked
slow; in the default run, tests/run/test_multiprocess.py's 2-process MoE run decodes with experts split).
In process: the chunked grouped matmul equals the unchunked one (values and gradients)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.model import moe_dispatch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(check: str) -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "tests.model.moe_dispatch_run", check], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  return out[check]


def test_dispatch_on_eight_devices_matches_one_device():
  block = _run("block")
  assert block["out"] <= 1e-5 and max(block["grads"]) <= 1e-5, block
  weights = [s for s in block["gathered_shapes"] if s.count(",") == 2]  # [experts, a, b] gathers: fsdp's only
  assert weights and all(s.startswith("f32[4,") for s in weights), block  # 4 = this shard's 8 / 2 experts
  assert "f32[24,16]" in block["gathered_shapes"], block  # the 12 tokens of each of 2 expert shards
  assert block["reduce_scatter"] and block["conditionals"] > 0, block
  # no collective inside a chunk's conditional: devices skip different chunks (the 2-process run hung on one)
  assert block["branch_collectives"] == [], block


def test_rollout_experts_over_fsdp_and_expert_decode_as_one_device():
  """The rollout layout splits the experts over fsdp x expert (4 shards of 2 experts; tokens exchanged over both
  axes inside the engine's shard_map): greedy records equal one device's."""
  decode = _run("decode_fsdp")
  assert all(decode["same"]) and len(decode["same"]) == 5, decode
  assert decode["expert_specs"] == ["P(None, ('fsdp', 'expert'), None, 'tensor')"], decode


@pytest.mark.slow
def test_expert_parallel_decode_matches_one_device():
  """The rollout engine with experts split over `expert` (tokens exchanged inside its shard_map over the data axes,
  idle shards running no-op forwards with their group) decodes what one device decodes."""
  decode = _run("decode")
  assert all(decode["same"]) and len(decode["same"]) == 5, decode


def test_chunks_skipped_past_the_groups_match_one_matmul():
  r = np.random.default_rng(0)
  rows, w = jnp.asarray(r.normal(size=(40, 6)), jnp.float32), jnp.asarray(r.normal(size=(3, 6, 5)), jnp.float32)
  sizes = jnp.asarray([7, 0, 13], jnp.int32)  # 20 grouped rows, then 20 outside every group

  def loss(matmul, rows, w):
    out = matmul(rows, w, sizes)
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out

  want, want_grads = jax.value_and_grad(lambda *a: loss(jax.lax.ragged_dot, *a), argnums=(0, 1), has_aux=True)(rows, w)
  for chunk in (6, 16):  # the last grouped row mid-chunk; chunks 4-7 (6) or 2 (16) skipped
    chunked = moe_dispatch.skip_empty(jax.lax.ragged_dot, chunk)
    got, grads = jax.jit(jax.value_and_grad(lambda *a: loss(chunked, *a), argnums=(0, 1), has_aux=True))(rows, w)
    assert np.abs(got[1] - want[1]).max() <= 1e-5 and not np.asarray(got[1][20:]).any(), chunk
    for g, h in zip(grads, want_grads):
      assert np.abs(g - h).max() <= 1e-5, chunk
