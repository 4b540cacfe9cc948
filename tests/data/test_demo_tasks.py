"""Procedural demo tasks: seeded, exact, short, and harder as difficulty grows."""

import re
import statistics

import pytest

from lrl_jax.data import make_tasks, record_from_dict
from lrl_jax.data.demo_tasks import MAX_DIFFICULTY
from lrl_jax.rewards.math_reward import last_boxed


def test_same_seed_same_tasks_other_seed_other_tasks():
  assert make_tasks(50, 2, seed=7) == make_tasks(50, 2, seed=7)
  assert make_tasks(50, 2, seed=7) != make_tasks(50, 2, seed=8)


@pytest.mark.parametrize("difficulty", range(1, MAX_DIFFICULTY + 1))
def test_answers_are_exact_and_solutions_check_out(difficulty):
  for task in make_tasks(200, difficulty, seed=difficulty):
    record = record_from_dict(task.to_dict(), "demo")
    assert int(record.ground_truth_answer) >= 0
    assert last_boxed(task.solution) == task.ground_truth_answer
    for step in re.findall(r"(\d+)([-+*/])(\d+)=(\d+)", task.solution):
      a, op, b, c = int(step[0]), step[1], int(step[2]), int(step[3])
      assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else None}[op] == c
    assert len(task.question) <= 90 and len(task.solution) <= 40


def test_small_vocabulary_and_growing_difficulty():
  chars = {c for d in range(1, MAX_DIFFICULTY + 1) for t in make_tasks(300, d) for c in t.question + t.solution}
  assert len(chars) <= 60
  means = [statistics.mean(int(t.ground_truth_answer) for t in make_tasks(300, d)) for d in (1, 2, 4)]
  assert means[0] < means[1] < means[2]
  with pytest.raises(ValueError):
    make_tasks(1, difficulty=MAX_DIFFICULTY + 1)
