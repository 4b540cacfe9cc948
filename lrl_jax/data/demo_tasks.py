"""Procedural arithmetic word problems in the math format for the CPU demo: short, exact, seeded, graded by difficulty.

The demo model is tiny, so questions use a small vocabulary and the reference solution is a line of arithmetic
followed by `\\boxed{N}`; `difficulty` (1-4) grows the numbers and the number of steps. The +/- stories keep every
prompt at exactly 48 tokens with the math template and the demo's word tokenizer (3 blocks of 16): a two-digit
operand drops one filler word. `MIXED` (0) mixes difficulty 1 with a harder half: + or - of a two-digit operand
(10-19) and a one-digit one. Its responses are 13-16 tokens with `<|im_end|>`, so each fits one block, and
warm start and training rows stay 4 blocks long (README, "Demo results").

`CHAIN` (5) is the miniature with the accuracy-parallelism trade-off: a story of 2-3 gains and losses (every total
0-9) whose solution writes each running total before using it ("3+4=7, 7-2=5, 5+4=9. \\boxed{9}"), so later
numbers of a block depend on earlier ones, and boxes the answer in one of two forms, its value or the last step's
sum ("\\boxed{5+4}"; the math judge accepts both): the box's tokens must agree on the form, which one forward
filling them all at once from their marginals does not ensure. Prompts are 48 tokens too (filler words pad the
story to 21) and responses 19-27 tokens with `<|im_end|>`: two blocks.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NAMES = ("Ann", "Bob", "Kim", "Tom")
ITEMS = ("apple", "pen", "cup", "egg")
MAX_DIFFICULTY = 5
MIXED = 0
CHAIN = 5
_NUMBER_RANGE = {1: 9, 2: 20, 3: 20, 4: 99, 5: 9}
_CHAIN_WORDS = 21  # question length in word-tokenizer tokens (lrl_jax/weights/tiny.py WORD_PATTERN)
_WORD = re.compile(r" ?[A-Za-z]+| ?\d|\s|[^A-Za-z\d\s]")


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


def _chain(rng: random.Random) -> tuple[str, int, str, str]:
  """A story of 2-3 gains ("gets", "finds") and losses ("gives away") whose running totals stay one-digit, padded
  with filler words to _CHAIN_WORDS tokens; the solution chains the running totals and boxes either the answer or
  the last step's sum (math-verify equates both with the answer): (question, answer, work, boxed)."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  total = rng.randint(2, 9)
  steps, clauses = [], []
  for k in range(rng.choice((2, 3))):
    # every total stays in 0..9; at most two losses among three steps keeps the bare story within _CHAIN_WORDS
    two_lost = k == 2 and all(op == "-" for _, op, _, _ in steps)
    lose = total == 9 or (total >= 1 and rng.random() < 0.4 and not two_lost)
    b = rng.randint(1, total) if lose else rng.randint(1, 9 - total)
    new = total - b if lose else total + b
    steps.append((total, "-" if lose else "+", b, new))
    clauses.append([f"gives away {b}"] if lose else [f"{rng.choice(('gets', 'finds'))} {b}", " more"])
    total = new
  endings = (f"How many {item}s now?", f"How many {item}s does {name} have?",
             f"How many {item}s does {name} have now?")

  def story(bag: str, ending: str) -> str:
    done = ", ".join(c[0] for c in clauses[:-1]) + " and " + clauses[-1][0]
    return f"{name} has {steps[0][0]} {item}s{bag}, {done}. {ending}"

  # fillers: the bag (0, 3 or 4 tokens), the question's ending (5, 7 or 8), one " more" after any gain
  mores = sum(len(c) == 2 for c in clauses)
  fits = [(b, e, _CHAIN_WORDS - len(_WORD.findall(story(b, e)))) for b in ("", " in a bag", " in a big bag")
          for e in endings]
  bag, ending, need = rng.choice([f for f in fits if 0 <= f[2] <= mores])
  for c in rng.sample([c for c in clauses if len(c) == 2], need):
    c[0] += c[1]
  question = story(bag, ending)
  assert len(_WORD.findall(question)) == _CHAIN_WORDS, question
  a, op, b, _ = steps[-1]
  boxed = f"{a}{op}{b}" if rng.random() < 0.5 else str(total)  # two written forms of one answer
  return question, total, ", ".join(f"{a}{op}{b}={c}" for a, op, b, c in steps), boxed


def make_task(rng: random.Random, difficulty: int) -> DemoTask:
  """One task at `difficulty` (1: + or - under 10; 2: +, -, * up to 20; 3: two steps; 4: mixed up to 99, with /;
  0 (MIXED): half difficulty 1, half + or - of a two-digit (10-19) and a one-digit operand; 5 (CHAIN): 2-3
  chained gains and losses with one-digit running totals written out)."""
  if not 0 <= difficulty <= MAX_DIFFICULTY:
    raise ValueError(f"difficulty must be in 0..{MAX_DIFFICULTY} (0: mixed), got {difficulty}")
  top = _NUMBER_RANGE[max(difficulty, 1)]
  if difficulty == MIXED and rng.random() < 0.5:
    question, answer, work = _one_step(rng, top, "+-", two_digit=True)
  elif difficulty in (MIXED, 1):
    question, answer, work = _one_step(rng, top, "+-")
  elif difficulty == CHAIN:
    question, answer, work, boxed = _chain(rng)
    return DemoTask(question, str(answer), f"{work}. \\boxed{{{boxed}}}")
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
