"""Code reward: extraction, test preparation, and judging of the shipped samples and of partly wrong programs."""

import json

import pytest

from lrl_jax.data import CodeRecord, load_records, sample_path
from lrl_jax.rewards.code_reward import extract_code, judge_value, normalize_output, prepare_function_test

FUNC = "def f(x):\n    return x * 2"


@pytest.mark.parametrize("text,expected", [
  (f"Here:\n```python\n{FUNC}\n```\nDone.", FUNC),
  (f"```python\nold = 1\n```\nbetter:\n```Python3\n{FUNC}\n```", FUNC),
  (f"```py\n{FUNC}\n```", FUNC),
  (f"```\n{FUNC}\n```", FUNC),
  (f"```text\nnot code (\n```\n```\n{FUNC}\n```", FUNC),
  (f"Truncated:\n```python\n{FUNC}\n", FUNC),
  (f"{FUNC}\n", FUNC),
  ("The answer is forty-two.", None),
  ("```\nnot python at all (\n```", None),
])
def test_extract_code(text, expected):
  assert extract_code(text) == expected


def test_prefix_is_prepended_before_extraction(judge):
  record = CodeRecord("double", "function", test_list=("assert f(2) == 4",), prefix="```python\ndef f(x):\n")
  result = judge.score([record], ["    return x * 2\n```"])[0]
  assert result["extracted"] == FUNC and result["correct"]


def test_prepare_function_tests():
  assert prepare_function_test("assert f(1) == [1, 2]") == (("value", "f(1)"), [1, 2])
  assert prepare_function_test("assert {3} == set(g(1))") == (("value", "set(g(1))"), {3})
  assert prepare_function_test("assert f(1) == float('inf')")[1] == float("inf")
  assert prepare_function_test("assert f(1) == g(2)")[0] == ("token", "assert __lrl_eq__(f(1), g(2))")
  assert prepare_function_test("assert ok(3)")[0] == ("token", "assert __lrl_truth__(ok(3))")
  assert judge_value("__import__('os').system('x')") == (False, None)
  assert judge_value("frozenset({1, 2})") == (True, frozenset({1, 2}))


def _samples(name):
  raw = json.loads(sample_path(name).read_text())
  return load_records(sample_path(name)), [r["reference_response"] for r in raw]


@pytest.mark.parametrize("name", ["mbpp", "humaneval", "primeintellect_stdio"])
def test_reference_solutions_pass_every_test(judge, name):
  records, responses = _samples(name)
  for result in judge.score(records, responses):
    assert result["correct"] and result["pass_rate"] == 1.0 and result["error"] is None, result


def test_partial_credit_and_per_test_time_limit(judge):
  record = CodeRecord("x", "function", test_list=(
    "assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 7", "assert f(-1) == -2"), test_time_limit=0.5)
  code = "```python\ndef f(x):\n    if x < 0:\n        while True: pass\n    return 2 * x\n```"
  result = judge.score([record], [code])[0]
  assert result["pass_rate"] == 0.5 and not result["correct"]
  assert result["error"].startswith("test 2: wrong result 6")


def test_timeout_reason_and_stdio_whitespace(judge):
  loop = CodeRecord("x", "function", test_list=("assert f(1) == 1",), test_time_limit=0.3)
  stdio = CodeRecord("echo", "stdio", test_input=("a b\n", "c\n"), test_output=("a  b\n", "c"))
  results = judge.score([loop, stdio], ["```python\ndef f(x):\n  while True: pass\n```",
                                        "```python\nprint(' '.join(input().split()), end='  \\n\\n')\n```"])
  assert results[0]["error"] == "test 0: timeout: time limit"
  assert results[1]["correct"]
  assert normalize_output(" a\n b \n") == "a b"


def test_wrong_stdio_output_and_runtime_error(judge):
  record = CodeRecord("sum", "stdio", test_input=("1 2\n", "x y\n"), test_output=("3\n", "0\n"))
  result = judge.score([record], ["```python\na, b = map(int, input().split())\nprint(a + b)\n```"])[0]
  assert result["pass_rate"] == 0.5 and "ValueError" in result["error"]


def test_missing_code_and_truncation(judge):
  record = CodeRecord("x", "function", test_list=("assert f(1) == 2",))
  none, cut = judge.score([record, record], ["I don't know.", "```python\ndef f(x): return 2 * x\n```"],
                          truncated=[False, True])
  assert none == {"extracted": None, "correct": False, "pass_rate": 0.0, "error": "no code found in the response"}
  assert cut["error"] == "truncated response" and cut["pass_rate"] == 0.0
