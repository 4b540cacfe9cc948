"""GRPO baseline (SPEC §7.5): accuracy reward only, prompt-group advantages, block_masked log-probs, no NLL or
TPF filter; otherwise the LightningRL settings."""

import os
import runpy


def get_config():
  c = runpy.run_path(os.path.join(os.path.dirname(__file__), "lightningrl.py"))["get_config"]()
  c.algorithm = "grpo"
  return c
