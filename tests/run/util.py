"""Helpers for trainer tests: load any config file and shrink it to the tiny test model."""

import os
import runpy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(name: str):
  return runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))["get_config"]()


def shrink(config):
  """Keep the algorithm of `config`; take model, data, rollout and schedule sizes from configs/test.py."""
  small = load("test")
  for section in ("model", "data", "warm_start", "rollout", "train", "eval", "logging", "mesh"):
    config[section] = small[section]
  config.rl.filter_all_wrong = small.rl.filter_all_wrong
  config.rl.filter_tpf_threshold = small.rl.filter_tpf_threshold
  config.optim = small.optim
  return config
