"""The RL loop: a 2-step run of every config family on the tiny model, metrics, summary, checkpoints, typos."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lrl_jax import train
from tests.run.util import ROOT, load, shrink

METRICS = ("loss", "policy_loss", "kl", "nll", "ratio_mean", "ratio_min", "ratio_max", "clip_frac", "entropy",
           "grad_norm", "lr", "reward_mean", "reward_std", "acc_reward_mean", "speed_reward_mean", "correct_ratio",
           "kept_group_frac", "tpf_mean", "sampler_logp_gap_max", "time_rollout", "time_reward", "time_logprobs",
           "time_update")


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
  """One tiny warm start shared by the runs below (each run would otherwise train the same one)."""
  work = tmp_path_factory.mktemp("warm")
  config = shrink(load("lightningrl"))
  config.train.steps = 0
  train.run(config, str(work))
  return str(work / "warmstart")


def test_one_update_per_step_without_the_logp_old_pass(tmp_path, warm):
  """train.recompute_old_logp=False (configs/demo.py): one update per step, ratio exactly 1, no sampler gap."""
  config = shrink(load("demo"))
  config.train.recompute_old_logp = False
  shutil.copytree(warm, tmp_path / "warmstart")
  train.run(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [m["step"] for m in lines] == [1, 2]
  for m in lines:
    assert m["updates"] == 1.0 and m["ratio_mean"] == 1.0 and m["clip_frac"] == 0.0
    assert "sampler_logp_gap_max" not in m and np.isfinite(m["loss"])


@pytest.mark.parametrize("family", ["lightningrl", "grpo", "grpo_traj", "demo"])
def test_two_step_run_of_each_config_family(tmp_path, warm, family):
  config = shrink(load(family))
  shutil.copytree(warm, tmp_path / "warmstart")
  summary = train.run(config, str(tmp_path))
  assert summary["algorithm"] == config.algorithm and summary["steps"] == 2
  for policy in ("start", "final"):
    assert set(summary[policy]) >= {"accuracy", "tpf", "aup"}
  assert json.load(open(tmp_path / "summary.json")) == summary
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [m["step"] for m in lines] == [1, 2]
  for name in METRICS:
    assert name in lines[-1], name
  if config.algorithm == "grpo_traj":  # the trainer rebuilds the sampler's states: same log-probs (float32)
    assert max(m["sampler_logp_gap_max"] for m in lines) <= 1e-4
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  # rerunning the finished command resumes at step 2 and does no more work
  again = train.run(config, str(tmp_path))
  assert again["steps"] == 2 and len(open(tmp_path / "metrics.jsonl").readlines()) == 2


def test_unnormalised_accuracy_reward_of_math_is_plus_or_minus_one(tmp_path, warm):
  """rl.acc_norm=False: math responses earn +1 / -1 (SPEC §7.3), not the judge's 1.0 / 0.0 pass rate."""
  config = shrink(load("lightningrl"))
  config.rl.acc_norm = False
  config.train.steps = 1
  shutil.copytree(warm, tmp_path / "warmstart")
  train.run(config, str(tmp_path))
  first = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert first["acc_reward_mean"] == pytest.approx(2 * first["correct_ratio"] - 1, abs=1e-12)


def test_reset_per_step_restarts_the_warmup_every_step_and_summary_keeps_every_threshold(tmp_path, warm):
  """optim.reset_per_step: each RL step's two updates run at 0 and 1/10 of lr (a persistent state would reach
  3/10 by step 2); summary.json holds the start and final point of every threshold of eval.thresholds."""
  config = shrink(load("lightningrl"))
  config.optim.update(reset_per_step=True, warmup_steps=10)
  config.train.sequences_per_update = 4  # 2 prompts x 4 responses: two updates per step
  config.eval.thresholds = (0.05, 0.5, 0.9)
  shutil.copytree(warm, tmp_path / "warmstart")
  summary = train.run(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [m["updates"] for m in lines] == [2.0, 2.0]
  assert [m["lr"] for m in lines] == pytest.approx([0.1 * config.optim.lr] * 2, rel=1e-6)
  for policy in ("start", "final"):
    assert [p["threshold"] for p in summary[policy]["points"]] == [0.05, 0.5, 0.9]
    assert all({"accuracy", "tpf"} <= set(p) for p in summary[policy]["points"])


def test_mistyped_override_suggests_the_key(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "lrl_jax.train", "--config", os.path.join(ROOT, "configs/test.py"),
                         "--workdir", str(tmp_path), "--config.rl.kl_bta=0.1"], capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.startswith("error: config.rl.kl_bta: unknown config key")
  assert "loss.kl_beta" in proc.stderr and proc.stderr.count("\n") == 1


def test_algorithm_switch_changes_shaping_and_loss():
  from lrl_jax.run import wiring
  for name, tpf_coef, nll, mode in (("lightningrl", 1.0, 0.1, "block_masked"), ("grpo", 0.0, 0.0, "block_masked"),
                                    ("grpo_traj", 0.0, 0.0, "trajectory")):
    config = load("lightningrl")
    config.algorithm = name
    shaping_cfg, loss_cfg = wiring.algorithm_configs(config)
    assert (shaping_cfg.tpf_coefficient, loss_cfg.nll_loss_weight, shaping_cfg.logp_mode) == (tpf_coef, nll, mode)
  config = load("grpo")
  config.loss.nll_loss_weight = 0.3  # an explicit value beats the algorithm's
  assert wiring.algorithm_configs(config)[1].nll_loss_weight == 0.3


def test_demo_responses_start_on_the_block_grid():
  """The demo's questions all tokenize to whole blocks, so a short response is not split across two blocks."""
  from lrl_jax.run import wiring
  from lrl_jax.data.templates import prompt_ids
  config = load("demo")
  _, _, tok, _ = wiring.model_from_config(config)
  d = config.data
  for name, size, seed in (("train", d.demo_size, d.shuffle_seed), ("eval", d.eval_size, d.shuffle_seed + 1)):
    lengths = {len(p) for p in prompt_ids(wiring.load_dataset("demo", size, d.demo_difficulty, seed), tok)}
    assert lengths == {3 * config.rollout.block_size}, name
