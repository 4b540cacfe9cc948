"""Code reward (SPEC §7.2): program extraction, test preparation and per-test verdicts from sandbox runs.

A function-mode assertion `assert EXPR == VALUE` (VALUE a literal or a pure builtin of literals) becomes a value
test: the sandbox returns EXPR's plain value and the judge compares it with VALUE, which never enters the sandbox.
Other assertions run as token tests whose `==` and truthiness refuse non-plain objects (always-equal tricks).
Stdio outputs are compared whitespace-normalised.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass, field
from typing import Any

from lrl_jax.rewards.sandbox import SandboxConfig, TestRun, run_tests

_FENCED_PY = re.compile(r"```[ \t]*(?:python3?|py)\b[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_FENCED_ANY = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_OPEN_PY = re.compile(r"```[ \t]*(?:python3?|py)\b[^\n]*\n(.*)$", re.DOTALL | re.IGNORECASE)
_CODE_HINT = re.compile(r"^\s*(def |class |import |from \S+ import |print\()", re.MULTILINE)


def _parses(code: str) -> bool:
  try:
    ast.parse(code)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return False
  return True


def extract_code(text: str) -> str | None:
  """The program in a response: last ```python block, else last fenced block that parses, else an unterminated
  ```python block at the end, else the whole text when it parses as Python and looks like code; None otherwise."""
  blocks = _FENCED_PY.findall(text)
  if blocks:
    return blocks[-1].strip("\n")
  for block in reversed(_FENCED_ANY.findall(text)):
    if block.strip() and _parses(block):
      return block.strip("\n")
  tail = _OPEN_PY.search(text)
  if tail and "```" not in tail.group(1):
    return tail.group(1).strip("\n")
  if "```" not in text and _CODE_HINT.search(text) and _parses(text):
    return text.strip("\n")
  return None


class _StrictAsserts(ast.NodeTransformer):
  """Rewrite `assert a == b` to `assert __lrl_eq__(a, b)` and `assert x` (a call or name) to `__lrl_truth__(x)`."""

  def visit_Assert(self, node: ast.Assert) -> ast.Assert:
    test = node.test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
      call = ast.Call(ast.Name("__lrl_eq__", ast.Load()), [test.left, test.comparators[0]], [])
    elif isinstance(test, (ast.Call, ast.Name, ast.Attribute, ast.Subscript)):
      call = ast.Call(ast.Name("__lrl_truth__", ast.Load()), [test], [])
    else:
      return node
    return ast.copy_location(ast.Assert(call, node.msg), node)


_SAFE_CALLS = {f.__name__: f for f in (set, frozenset, tuple, list, dict, sorted, float, int, str, bool, complex,
                                          abs, round, min, max, sum, len)}
_SAFE_NAMES = {"inf": float("inf"), "nan": float("nan"), "True": True, "False": False, "None": None}


class _Unsafe(Exception):
  """The expression is not a judge-evaluable value."""


def _safe_value(node: ast.AST, budget: list[int]) -> Any:
  """Evaluate literals, containers, `inf`/`nan` and calls of a few pure builtins on such values; else _Unsafe."""
  budget[0] -= 1
  if budget[0] < 0:
    raise _Unsafe
  if isinstance(node, ast.Constant):
    return node.value
  if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
    items = [_safe_value(e, budget) for e in node.elts]
    return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
  if isinstance(node, ast.Dict) and None not in node.keys:
    return {_safe_value(k, budget): _safe_value(v, budget) for k, v in zip(node.keys, node.values)}
  if isinstance(node, ast.Name) and node.id in _SAFE_NAMES:
    return _SAFE_NAMES[node.id]
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    value = _safe_value(node.operand, budget)
    return -value if isinstance(node.op, ast.USub) else +value
  if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):  # complex literals like 1+2j
    left, right = _safe_value(node.left, budget), _safe_value(node.right, budget)
    if isinstance(right, complex) or isinstance(left, complex):
      return left + right if isinstance(node.op, ast.Add) else left - right
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SAFE_CALLS
      and not node.keywords):
    return _SAFE_CALLS[node.func.id](*(_safe_value(a, budget) for a in node.args))
  raise _Unsafe


def judge_value(node_or_text: ast.AST | str) -> tuple[bool, Any]:
  """(True, value) when an expression (AST or source) is a judge-evaluable value, else (False, None)."""
  try:
    node = ast.parse(node_or_text, mode="eval").body if isinstance(node_or_text, str) else node_or_text
    return True, _safe_value(node, [100_000])
  except (_Unsafe, ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
    return False, None


def prepare_function_test(source: str) -> tuple[tuple[str, str], Any]:
  """((kind, sandbox source), expected): a value test when the assertion is `EXPR == VALUE` with VALUE evaluable
  by the judge (literals, `set([...])`, ...), else a token test with strict `==` and truthiness."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return ("token", source), None
  if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
    test = tree.body[0].test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
      left, right = test.left, test.comparators[0]
      (left_ok, left_val), (right_ok, right_val) = judge_value(left), judge_value(right)
      if right_ok != left_ok:
        expr, expected = (left, right_val) if right_ok else (right, left_val)
        return ("value", ast.unparse(expr)), expected
  return ("token", ast.unparse(ast.fix_missing_locations(_StrictAsserts().visit(tree)))), None


def normalize_output(text: str) -> str:
  """Whitespace-insensitive form of program output (the reference's comparison)."""
  return " ".join(text.split())


@dataclass(frozen=True)
class CodeTask:
  """Everything a worker needs to judge one program: sandbox tests plus the expectations kept outside it."""

  mode: str
  code: str
  tests: list = field(default_factory=list)
  expected: list = field(default_factory=list)
  time_limit_s: float = 1.0
  sandbox: SandboxConfig = SandboxConfig()


def build_task(mode: str, code: str, test_list: tuple[str, ...], test_input: tuple[str, ...],
               test_output: tuple[str, ...], time_limit_s: float, sandbox: SandboxConfig) -> CodeTask:
  """The task for one extracted program and one record's tests."""
  if mode == "function":
    prepared = [prepare_function_test(t) for t in test_list]
    return CodeTask(mode, code, [p[0] for p in prepared], [p[1] for p in prepared], time_limit_s, sandbox)
  return CodeTask(mode, code, [t.encode("utf-8") for t in test_input], list(test_output), time_limit_s, sandbox)


def _verdict(mode: str, kind: str | None, run: TestRun, expected: Any) -> tuple[bool, str]:
  """(passed, reason) for one test run."""
  reason = run.payload[:300].decode("utf-8", "replace")
  if mode == "stdio":
    if run.status != "ok":
      return False, f"{run.status}: {reason}"
    got = run.payload.decode("utf-8", "replace")
    same = normalize_output(got) == normalize_output(expected)
    return same, "" if same else "wrong output"
  if run.status == "pass" and kind == "token":
    return True, ""
  if run.status == "value" and kind == "value":
    ok, got = judge_value(run.payload.decode("utf-8", "replace"))
    if not ok:
      return False, "result is not a comparable value"
    same = bool(got == expected)
    return same, "" if same else f"wrong result {reason[:120]}"
  return False, f"{run.status}: {reason}"


def evaluate_code(task: CodeTask) -> dict[str, Any]:
  """Run a task in the sandbox (in a judge worker): per-test `passed` and `reasons`, run `error`, `elapsed_s`."""
  start = time.monotonic()
  result = run_tests(task.mode, task.code, task.tests, task.time_limit_s, task.sandbox)
  kinds = [t[0] for t in task.tests] if task.mode == "function" else [None] * len(task.tests)
  verdicts = [_verdict(task.mode, k, r, e) for k, r, e in zip(kinds, result.tests, task.expected)]
  return {"passed": [v[0] for v in verdicts], "reasons": [v[1] for v in verdicts], "error": result.error,
          "elapsed_s": time.monotonic() - start}
