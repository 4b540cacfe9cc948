"""Procedural arithmetic word problems in the math format for the CPU demo: short, exact, seeded, graded by difficulty.

The demo model is tiny, so questions use a small vocabulary and the reference solution is a line of arithmetic
followed by `\\boxed{N}`; `difficulty` (1-4) grows the numbers and the number of steps. Difficulty-1 questions all
have the same length: with the math template and the demo's word tokenizer a prompt is exactly 48 tokens (3 blocks
of 16), so a ~14-token response fits in one block instead of straddling two (README, "Demo results").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Ann", "Bob", "Kim", "Tom")
ITEMS = ("apple", "pen", "cup", "egg")
MAX_DIFFICULTY = 4
_NUMBER_RANGE = {1: 9, 2: 20, 3: 20, 4: 99}


@dataclass(frozen=True)
class DemoTask:
  """One problem: the question, its exact integer answer as text, and a short worked solution."""

  question: str
  ground_truth_answer: str
  solution: str

  def to_dict(self) -> dict[str, str]:
    """The task as a math-format record (plus the extra `solution` field)."""
    return {"question": self.question, "ground_truth_answer": self.ground_truth_answer, "solution": self.solution}


def _one_step(rng: random.Random, top: int, ops: str) -> tuple[str, int, str]:
  """A one-operation story: (question, answer, worked step)."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  op = rng.choice(ops)
  a, b = rng.randint(1, top), rng.randint(1, top)
  if op == "+":
    return (f"{name} has {a} {item}s in a big bag and gets {b} more. How many {item}s does {name} have now?", a + b,
            f"{a}+{b}={a + b}")
  if op == "-":
    a, b = max(a, b), min(a, b)
    return (f"{name} has {a} {item}s in a big bag and gives away {b}. How many {item}s does {name} have left?", a - b,
            f"{a}-{b}={a - b}")
  if op == "*":
    a, b = rng.randint(2, min(top, 12)), rng.randint(2, min(top, 12))
    return f"{a} boxes hold {b} {item}s each. How many {item}s?", a * b, f"{a}*{b}={a * b}"
  b, k = rng.randint(2, min(top, 12)), rng.randint(1, min(top, 12))
  return f"{b * k} {item}s are shared by {b} kids. How many each?", k, f"{b * k}/{b}={k}"


def _two_steps(rng: random.Random, top: int) -> tuple[str, int, str]:
  """A two-operation story (buy boxes then add or give away loose items)."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  a, b = rng.randint(2, min(top, 12)), rng.randint(2, min(top, 12))
  c = rng.randint(1, top)
  if rng.random() < 0.5:
    total = a * b + c
    return (f"{name} buys {a} boxes of {b} {item}s and finds {c} more. How many {item}s?", total,
            f"{a}*{b}={a * b}, {a * b}+{c}={total}")
  c = rng.randint(1, a * b)
  total = a * b - c
  return (f"{name} buys {a} boxes of {b} {item}s and gives away {c}. How many are left?", total,
          f"{a}*{b}={a * b}, {a * b}-{c}={total}")


def make_task(rng: random.Random, difficulty: int) -> DemoTask:
  """One task at `difficulty` (1: + or - under 10; 2: +, -, * up to 20; 3: two steps; 4: mixed up to 99, with /)."""
  if not 1 <= difficulty <= MAX_DIFFICULTY:
    raise ValueError(f"difficulty must be in 1..{MAX_DIFFICULTY}, got {difficulty}")
  top = _NUMBER_RANGE[difficulty]
  if difficulty == 1:
    question, answer, work = _one_step(rng, top, "+-")
  elif difficulty == 2:
    question, answer, work = _one_step(rng, top, "+-*")
  elif difficulty == 3 or rng.random() < 0.5:
    question, answer, work = _two_steps(rng, top)
  else:
    question, answer, work = _one_step(rng, top, "+-*/")
  return DemoTask(question, str(answer), f"{work}. \\boxed{{{answer}}}")


def make_tasks(n: int, difficulty: int = 1, seed: int = 0) -> list[DemoTask]:
  """`n` tasks from a fixed seed: the same arguments always give the same list."""
  rng = random.Random(seed)
  return [make_task(rng, difficulty) for _ in range(n)]
