"""Fixtures for the reward tests: one judge (worker pool) shared by the whole session."""

import pytest

from lrl_jax.rewards import Judge, JudgeConfig


@pytest.fixture(scope="session")
def judge():
  """A judge with 4 workers (sandboxes run in the workers, never in the pytest process)."""
  with Judge(JudgeConfig(workers=4)) as j:
    yield j
