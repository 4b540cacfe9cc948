"""`python -m lrl_jax.bench reward`: responses judged per second for rollout-sized batches, against a naive reference.

Batches: 4096 math responses (demo arithmetic plus symbolic MATH-style answers, right and wrong) and 1024 code
responses with 3 tests each (MBPP/HumanEval samples: correct, wrong, raising and a few looping programs). The
reference, timed in the same run on a subset, is the naive approach: one fresh Python subprocess per check, no pool
(and for code, no sandbox).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time

from absl import flags

from lrl_jax import cli
from lrl_jax.data import CodeRecord, MathRecord, load_records, make_tasks, sample_path
from lrl_jax.rewards import Judge, JudgeConfig
from lrl_jax.rewards.code_reward import extract_code
from lrl_jax.rewards.math_reward import fast_equal, ground_truth, last_boxed
from lrl_jax.rewards.pool import available_cpus

PROG = "python -m lrl_jax.bench reward"


def symbolic_pair(rng: random.Random) -> tuple[str, str, str]:
  """(ground truth, an equivalent answer, a wrong answer) in MATH style, with fresh numbers so pairs rarely repeat."""
  a, b = rng.randint(2, 60), rng.choice((2, 3, 5, 6, 7, 10, 11))
  kind = rng.randrange(5)
  if kind == 0:
    return f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2", f"(x+{a + 1})^2"
  if kind == 1:
    return f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"\\sqrt{{{a * b}}}"
  if kind == 2:
    return f"{a}, {a + b}", f"{a + b}, {a}", f"{a}, {a + b + 1}"
  if kind == 3:
    return f"{a}\\pi", f"\\pi \\cdot {a}", f"{a + 1}\\pi"
  return f"\\frac{{\\sqrt{{{b}}}}}{{{a}}}", f"\\frac{{1}}{{{a}}}\\sqrt{{{b}}}", f"\\frac{{\\sqrt{{{b}}}}}{{{a + 1}}}"


NAIVE_MATH = ("import sys\nfrom math_verify import parse, verify\n"
              "print(verify(parse(sys.argv[1]), parse(sys.argv[2])))\n")
NAIVE_CODE = ("import json, sys\ncode, tests = json.loads(sys.argv[1])\nns = {}\nok = []\ntry:\n    exec(code, ns)\n"
              "except BaseException:\n    print(json.dumps([False] * len(tests)))\n    sys.exit(0)\nfor t in tests:\n"
              "    try:\n        exec(t, ns)\n        ok.append(True)\n"
              "    except BaseException:\n        ok.append(False)\n"
              "print(json.dumps(ok))\n")


def math_batch(n: int, seed: int = 0) -> tuple[list[MathRecord], list[str]]:
  """75% demo arithmetic (half right), 25% symbolic MATH-style answers (half right)."""
  rng = random.Random(seed)
  tasks = [t for d in (1, 2, 3, 4) for t in make_tasks(n, d, seed)]
  records, responses = [], []
  for i in range(n):
    if i % 4 == 3:
      truth, good, bad = symbolic_pair(rng)
      answer = good if rng.random() < 0.5 else bad
    else:
      task = rng.choice(tasks)
      truth = task.ground_truth_answer
      answer = truth if rng.random() < 0.5 else str(int(truth) + rng.choice((-2, -1, 1, 10)))
    records.append(MathRecord("q", truth))
    responses.append(f"Let me compute step by step. The result is \\boxed{{{answer}}}.")
  return records, responses


def _wrong_variants(record: CodeRecord) -> list[str]:
  """A wrong, a raising and a looping program for a record's entry point."""
  name = re.search(r"(\w+)\(", record.test_list[0]).group(1)
  return [f"```python\ndef {name}(*args):\n    return None\n```",
          f"```python\ndef {name}(*args):\n    raise ValueError('no')\n```",
          f"```python\ndef {name}(*args):\n    while True:\n        pass\n```"]


def code_batch(n: int, seed: int = 0) -> tuple[list[CodeRecord], list[str]]:
  """Function-mode records trimmed to 3 tests; 60% correct, 25% wrong, 14.5% raising, 0.5% looping."""
  rng = random.Random(seed)
  pool = []
  for name in ("mbpp", "humaneval"):
    raw = json.loads(sample_path(name).read_text())
    for record, row in zip(load_records(sample_path(name)), raw):
      record = CodeRecord(record.question, "function", test_list=record.test_list[:3], prefix=record.prefix)
      if len(record.test_list) == 3:
        pool.append((record, row["reference_response"], _wrong_variants(record)))
  records, responses = [], []
  for _ in range(n):
    record, good, (wrong, raising, looping) = rng.choice(pool)
    u = rng.random()
    records.append(record)
    responses.append(good if u < 0.6 else wrong if u < 0.85 else raising if u < 0.995 else looping)
  return records, responses


def _naive_math(record: MathRecord, response: str) -> bool:
  """One fresh interpreter running math-verify on one pair."""
  truth, answer = ground_truth(record.ground_truth_answer), last_boxed(response) or ""
  done = subprocess.run([sys.executable, "-c", NAIVE_MATH, f"\\boxed{{{truth}}}", f"\\boxed{{{answer}}}"],
                        capture_output=True, text=True, timeout=60)
  return done.stdout.strip() == "True"


def _naive_code(record: CodeRecord, response: str) -> float:
  """One fresh interpreter (no sandbox) running the program and its tests, killed at the summed time limit."""
  code = extract_code(record.prefix + response) or ""
  try:
    done = subprocess.run([sys.executable, "-c", NAIVE_CODE, json.dumps([code, list(record.test_list)])],
                          capture_output=True, text=True, timeout=len(record.test_list) * record.test_time_limit + 1)
    passed = json.loads(done.stdout or "[]")
  except subprocess.TimeoutExpired:
    passed = []
  return sum(passed) / len(record.test_list)


def _timed(fn, *args) -> tuple[float, object]:
  start = time.perf_counter()
  out = fn(*args)
  return time.perf_counter() - start, out


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("math", 4096, "math responses in the batch", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("code", 1024, "code responses (3 tests each) in the batch", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("naive", 24, "responses per batch timed with the naive reference", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("workers", None, "judge workers (default: 2 per CPU, at most 32)", lower_bound=1,
                       flag_values=fv)


def main(argv: list[str] | None = None) -> int:
  """Print a table of responses/s for both batches, the naive reference's rate and the ratio."""
  return cli.run(define_flags, run, argv, PROG, __doc__)


def run(args: flags.FlagValues) -> int:
  math_records, math_responses = math_batch(args.math)
  code_records, code_responses = code_batch(args.code)
  fast = sum(fast_equal(ground_truth(r.ground_truth_answer), last_boxed(s)) is not None
             for r, s in zip(math_records, math_responses)) / max(1, args.math)
  with Judge(JudgeConfig(workers=args.workers)) as judge:
    startup, _ = _timed(judge.score, math_records[:judge.pool.size * 4], math_responses[:judge.pool.size * 4])
    layers = judge.pool.run([("lrl_jax.rewards.sandbox:active_layers", None)], 60)[0][1]
    t_math, math_out = _timed(judge.score, math_records, math_responses)
    t_code, code_out = _timed(judge.score, code_records, code_responses)
  k = min(args.naive, args.math, args.code)
  t_naive_math, naive_math = _timed(lambda: [_naive_math(r, s) for r, s in zip(math_records[:k], math_responses[:k])])
  t_naive_code, naive_code = _timed(lambda: [_naive_code(r, s) for r, s in zip(code_records[:k], code_responses[:k])])
  agree_math = sum(a == b["correct"] for a, b in zip(naive_math, math_out[:k]))
  agree_code = sum(a == b["pass_rate"] for a, b in zip(naive_code, code_out[:k]))
  rows = [(f"math ({fast:.0%} fast path)", args.math, t_math, k / t_naive_math, f"{agree_math}/{k}"),
          ("code (3 tests each)", args.code, t_code, k / t_naive_code, f"{agree_code}/{k}")]
  print(f"reward judge: {available_cpus()} CPUs, {judge.pool.size} workers; startup+warm-up {startup:.1f}s (once)")
  print(f"sandbox: {layers}")
  print(f"{'batch':<24}{'n':>6}{'judge s':>9}{'resp/s':>9}{'naive resp/s':>14}{'ratio':>8}{'agree':>8}")
  for name, n, seconds, naive_rate, agree in rows:
    print(f"{name:<24}{n:>6}{seconds:>9.2f}{n / seconds:>9.1f}{naive_rate:>14.1f}{n / seconds / naive_rate:>7.1f}x"
          f"{agree:>8}")
  accuracy = sum(r["correct"] for r in math_out) / max(1, len(math_out))
  rate = sum(r["pass_rate"] for r in code_out) / max(1, len(code_out))
  print(f"math accuracy {accuracy:.3f}, code mean pass rate {rate:.3f}; naive = one fresh python per response "
        f"(no pool, no sandbox), timed on the first {k} of each batch")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
