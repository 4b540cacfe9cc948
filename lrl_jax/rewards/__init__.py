"""Rewards (no JAX): math answer checking, code extraction and a sandboxed test runner, batch judging."""

from lrl_jax.rewards.judge import Judge, JudgeConfig, is_truncated, judge_responses
from lrl_jax.rewards.sandbox import SandboxConfig, detect_layers

__all__ = ["Judge", "JudgeConfig", "SandboxConfig", "detect_layers", "is_truncated", "judge_responses"]
