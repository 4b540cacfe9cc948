"""Procedural arithmetic word problems in the math format for the CPU demo: short, exact, seeded, graded by difficulty.

The demo model is tiny, so questions use a small vocabulary and the reference solution is a line of arithmetic
followed by `\\boxed{N}`; `difficulty` (1-4) grows the numbers and the number of steps. The +/- stories keep every
prompt at exactly 48 tokens with the math template and the demo's word tokenizer (3 blocks of 16): a two-digit
operand drops one filler word. `MIXED` (0) mixes difficulty 1 with a harder half: + or - of a two-digit operand
(10-19) and a one-digit one. Its responses are 13-16 tokens with `<|im_end|>`, so each fits one block, and
warm start and training rows stay 4 blocks long (README, "Demo results").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Ann", "Bob", "Kim", "Tom")
ITEMS = ("apple", "pen", "cup", "egg")
MAX_DIFFICULTY = 4
MIXED = 0
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


def _one_step(rng: random.Random, top: int, ops: str, two_digit: bool = False) -> tuple[str, int, str]:
  """A one-operation story: (question, answer, worked step); `two_digit`: one operand is 10-19, the other <= top."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  op = rng.choice(ops)
  a, b = rng.randint(1, top), rng.randint(1, top)
  if two_digit:
    a = rng.randint(10, 19)
    if op == "+" and rng.random() < 0.5:
      a, b = b, a
  if op in "+-":
    a, b = (a, b) if op == "+" else (max(a, b), min(a, b))
    extra = (a >= 10) + (b >= 10)  # digits beyond one per operand, each offset by a dropped filler word
    bag = " in a big bag" if extra == 0 else " in a bag"
    if op == "+":
      return (f"{name} has {a} {item}s{bag} and gets {b} more. How many {item}s does {name} have"
              f"{' now' if extra < 2 else ''}?", a + b, f"{a}+{b}={a + b}")
    return (f"{name} has {a} {item}s{bag} and gives away {b}. How many {item}s does {name} have"
            f"{' left' if extra < 2 else ''}?", a - b, f"{a}-{b}={a - b}")
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
  """One task at `difficulty` (1: + or - under 10; 2: +, -, * up to 20; 3: two steps; 4: mixed up to 99, with /;
  0 (MIXED): half difficulty 1, half + or - of a two-digit (10-19) and a one-digit operand)."""
  if not 0 <= difficulty <= MAX_DIFFICULTY:
    raise ValueError(f"difficulty must be in 0..{MAX_DIFFICULTY} (0: mixed), got {difficulty}")
  top = _NUMBER_RANGE[max(difficulty, 1)]
  if difficulty == MIXED and rng.random() < 0.5:
    question, answer, work = _one_step(rng, top, "+-", two_digit=True)
  elif difficulty in (MIXED, 1):
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
