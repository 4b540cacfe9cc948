"""Math reward: boxed extraction, ground truths, normalisation, math-verify and its time bound."""

import os
import time

import pytest

from lrl_jax.data import MathRecord
from lrl_jax.rewards.judge import MATH_VERIFY, judge_responses
from lrl_jax.rewards.math_reward import exact_number, fast_equal, ground_truth, last_boxed, normalize
from lrl_jax.rewards.pool import WorkerPool


@pytest.mark.parametrize("text,expected", [
  ("so \\boxed{42}.", "42"),
  ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
  ("first \\boxed{1} then \\boxed{2}", "2"),
  ("\\boxed{a_{b_{c}}} done", "a_{b_{c}}"),
  ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
  ("\\boxed {7}", "7"),
  ("\\fbox{8}", "8"),
  ("good \\boxed{3} then truncated \\boxed{4", "3"),
  ("no box at all: 5", None),
  ("\\boxed{}", ""),
])
def test_last_boxed(text, expected):
  assert last_boxed(text) == expected


def test_ground_truth_uses_what_follows_hashes():
  assert ground_truth("3 + 4 = 7 apples\n#### 7") == "7"
  assert ground_truth("a #### 1 #### 1,200") == "1,200"
  assert ground_truth("The answer is \\boxed{\\frac{3}{4}}.") == "\\frac{3}{4}"
  assert ground_truth(" 12 ") == "12"


@pytest.mark.parametrize("truth,answer,expected", [
  ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
  ("0.5", "\\frac12", True),
  ("\\frac{1}{2}", "1/2", True),
  ("1000", "1,000", True),
  ("1,000", "1{,}000", True),
  ("18", "18 \\text{ dollars}", True),
  ("18", "\\$18", True),
  ("8.75", "8.750", True),
  ("90", "90^\\circ", True),
  ("50\\%", "50", True),
  ("25\\%", "0.25", True),
  ("50", "50\\%", True),
  ("50\\%", "0.5", True),
  ("0.5", "0.5\\%", True),
  ("50", "5000\\%", False),  # issue 23: 100 times the number, with a percent sign
  ("0.5", "50\\%", False),
  ("50\\%", "5000\\%", False),
  ("50\\%", "5000", False),
  ("50\\%", "0.005", False),
  ("50", "0.5", False),
  ("5", "x = 5", True),
  ("-3", "-3.0", True),
  ("7", "8", False),
  ("1,000", "100", False),
  ("\\frac{1}{3}", "0.33", False),
  ("3", "", False),
  ("\\sqrt{2}", "2^{1/2}", None),
  ("2, 3", "3, 2", None),
])
def test_fast_path(truth, answer, expected):
  assert fast_equal(truth, answer) is expected


def test_normalize_and_exact_numbers():
  assert normalize("\\left( 2, \\frac{\\pi}{2} \\right)") == normalize("(2,\\frac{\\pi}{2})")
  assert normalize("\\text{(A)}") == "(A)"
  assert exact_number("12,345") is None and exact_number(normalize("12,345"))[0] == 12345
  assert exact_number("\\frac{3}{0}") is None


@pytest.mark.parametrize("truth,response,correct", [
  ("\\sqrt{2}", "\\boxed{2^{1/2}}", True),
  ("x^2 + 2x + 1", "\\boxed{(x+1)^2}", True),
  ("2, 3", "\\boxed{3, 2}", True),
  ("\\left( 2, \\frac{\\pi}{2} \\right)", "\\boxed{(2, \\pi/2)}", True),
  ("\\frac{14}{3}", "\\boxed{\\dfrac{14}{3}}", True),
  ("She has 12 left.\n#### 12", "So \\boxed{12} rolls", True),
  ("#### 1,250", "\\boxed{1250}", True),
  ("\\sqrt{3}", "\\boxed{\\sqrt{2}}", False),
  ("x^2", "\\boxed{x^3}", False),
  ("12", "The answer is 12.", False),
  ("50", "\\boxed{5000\\%}", False),
  ("50", "\\boxed{50\\%}", True),
])
def test_judge_math(judge, truth, response, correct):
  result = judge.score([MathRecord("q", truth)], [response])[0]
  assert result["correct"] is correct and result["pass_rate"] == float(correct)
  assert (result["error"] is None) is correct


def test_truncated_math_response_is_wrong(judge):
  result = judge.score([MathRecord("q", "4")], ["\\boxed{4}"], truncated=[True])[0]
  assert result == {"extracted": "4", "correct": False, "pass_rate": 0.0, "error": "truncated response"}


def test_judge_responses_applies_the_truncation_margin(judge):
  """The one judging of decoded responses: a response within 5 tokens of max_new_tokens is wrong (SPEC §7.2), one
  token shorter is judged on its answer; no limit means no truncation."""
  records, texts = [MathRecord("q", "4")] * 4, ["\\boxed{4}"] * 4
  results = judge_responses(judge, records, texts, [15, 14, 19, 19], 20)
  assert [r["error"] for r in results] == ["truncated response", None, "truncated response", "truncated response"]
  assert [r["pass_rate"] for r in results] == [0.0, 1.0, 0.0, 0.0]
  assert judge_responses(judge, records[:1], texts[:1], [10**6], None)[0]["correct"]


def test_a_hanging_check_is_killed_at_its_deadline():
  pool = WorkerPool(1, preload=("math_verify",))
  try:
    pool.run([("os:getpid", None)], 30)
    (victim,) = pool.pids()
    start = time.monotonic()
    # math-verify's own alarm is set to 60 s here, so only the pool's kill can stop it.
    results = pool.run([(MATH_VERIFY, ("9^{9^{9^{9}}}", "1", 60)), ("time:sleep", 1000)], [1.0, 0.5])
    elapsed = time.monotonic() - start
    assert [ok for ok, _ in results] == [False, False]
    assert all("timeout" in msg and "killed" in msg for _, msg in results)
    assert elapsed < 8.0  # two kills plus one worker restart (its imports are not on the clock)
    with pytest.raises(ProcessLookupError):
      os.kill(victim, 0)
    assert pool.run([("math:sqrt", 16.0)], 30) == [(True, 4.0)]
  finally:
    pool.close()
