"""Two RL steps end to end on a tiny MoE checkpoint (hub SDAR-MoE layout): rollouts through the decode engine,
updates with the load-balancing loss on, router load metrics in metrics.jsonl, checkpoints that resume."""

import json

import numpy as np
import pytest

from lrl_jax import train
from lrl_jax.weights import tiny_moe
from tests.run.util import load


@pytest.mark.slow  # the default run trains the MoE model in test_sharded_moe (2 updates, 8 devices == 1)
def test_two_rl_steps_on_a_moe_model(tmp_path):
  config = load("test")
  cfg = tiny_moe.tiny_moe_config(top_k=2)
  config.model.checkpoint = tiny_moe.make_hf_moe_checkpoint(str(tmp_path / "moe"), cfg, seed=0)
  config.warm_start.steps = 0
  config.loss.router_aux_loss_coef = 0.01
  run = tmp_path / "run"
  summary = train.run(config, str(run))
  assert summary["steps"] == 2
  lines = [json.loads(line) for line in open(run / "metrics.jsonl")]
  assert [m["step"] for m in lines] == [1, 2]
  for m in lines:
    assert m["moe/load_max_over_mean"] >= 1.0 >= m["moe/load_min_over_mean"] >= 0.0
    assert m["router_aux_loss"] >= 0.5 * cfg.num_experts_per_tok  # k under uniform routing
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
  again = train.run(config, str(run))
  assert again["steps"] == 2 and len(open(run / "metrics.jsonl").readlines()) == 2
