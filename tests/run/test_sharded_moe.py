"""The sharded RL update of a tiny MoE model on 8 CPU devices (data 2 × expert 2 × tensor 2, and fsdp 2 × expert 4)
gives the 1-device parameters and router metrics (fp32, 1e-5); the experts are split over the expert axis."""

import numpy as np
import pytest

from tests.run.test_sharded import _run


@pytest.fixture(scope="module")
def one():
  return _run(1, 1, 1, 1, "moe")


@pytest.mark.parametrize("mesh", [(2, 1, 2, 2), pytest.param((1, 2, 1, 4), marks=pytest.mark.slow)])  # (data, fsdp, tensor, expert)
def test_expert_parallel_step_matches_one_device(one, mesh):
  eight = _run(*mesh, "moe")
  assert one["devices"] == 1 and eight["devices"] == 8
  assert any("expert" in s for s in eight["shardings"]) and eight["grads_like_params"]
  for name in one["params"]:
    a, b = np.asarray(one["params"][name]), np.asarray(eight["params"][name])
    assert np.abs(a - b).max() <= 1e-5, name
  for key in ("loss", "router_aux_loss", "moe/load_max_over_mean", "moe/load_min_over_mean"):
    assert abs(one["metrics"][key] - eight["metrics"][key]) <= 1e-5, key
  assert one["metrics"]["moe/load_max_over_mean"] > 1.0 and one["metrics"]["router_aux_loss"] > 0
  assert one["moved"] > 1e-4
