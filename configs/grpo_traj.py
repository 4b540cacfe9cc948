"""GRPO(traj) baseline (TraceRL without a value model, SPEC §7.5): GRPO trained on the sampler's trajectories."""

import os
import runpy


def get_config():
  c = runpy.run_path(os.path.join(os.path.dirname(__file__), "lightningrl.py"))["get_config"]()
  c.algorithm = "grpo_traj"
  return c
