"""Batch scoring of responses (math and code) through a bounded worker pool; one result dict per response.
`judge_responses` is the one judging of decoded responses: rollouts, the trainer's eval and eval sweeps call it.

Each result has `extracted` (boxed answer or program), `correct` (bool), `pass_rate` (math: 0/1; code: the fraction
of tests passed, which is the code reward) and `error` (why it is wrong or could not be judged, else None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lrl_jax.data.formats import CodeRecord, MathRecord, Record
from lrl_jax.rewards.code_reward import build_task, extract_code
from lrl_jax.rewards.math_reward import fast_equal, ground_truth, last_boxed
from lrl_jax.rewards.pool import WorkerPool, available_cpus
from lrl_jax.rewards.sandbox import PER_TEST_OVERHEAD_S, SandboxConfig, cleanup_after_process

MATH_VERIFY = "lrl_jax.rewards.math_reward:verify_with_math_verify"
EVALUATE_CODE = "lrl_jax.rewards.code_reward:evaluate_code"
PRELOAD = ("lrl_jax.rewards.code_reward", "lrl_jax.rewards.math_reward", "math_verify")
TRUNCATION_MARGIN = 5
MAX_DEFAULT_WORKERS = 32  # each worker holds math-verify/sympy (~100 MB)


@dataclass(frozen=True)
class JudgeConfig:
  """Pool size (None = 2 per CPU, at most MAX_DEFAULT_WORKERS: code workers mostly wait on their sandbox),
  math-verify time bound per check, slack added to each sandbox deadline before its worker is killed, and the
  sandbox limits."""

  workers: int | None = None
  math_timeout_s: float = 10.0
  code_slack_s: float = 10.0
  sandbox: SandboxConfig = field(default_factory=SandboxConfig)


def is_truncated(response_length: int | None, max_new_tokens: int | None, margin: int = TRUNCATION_MARGIN) -> bool:
  """SPEC §7.2: a response within `margin` tokens of the generation limit counts as truncated (wrong)."""
  if response_length is None or max_new_tokens is None:
    return False
  return response_length >= max_new_tokens - margin


def _result(extracted: str | None, correct: bool, pass_rate: float, error: str | None) -> dict[str, Any]:
  return {"extracted": extracted, "correct": correct, "pass_rate": pass_rate, "error": error}


def _code_result(code: str, reply: dict[str, Any]) -> dict[str, Any]:
  """Turn a worker's per-test verdicts into the result dict."""
  passed = reply["passed"]
  rate = sum(passed) / len(passed) if passed else 0.0
  failures = [f"test {i}: {r}" for i, (p, r) in enumerate(zip(passed, reply["reasons"])) if not p]
  error = reply["error"] or (failures[0] if failures else None)
  return _result(code, bool(passed) and all(passed), rate, error)


class Judge:
  """Scores batches; owns a worker pool (started lazily, stopped by `close()` or at exit)."""

  def __init__(self, config: JudgeConfig | None = None) -> None:
    self.config = config or JudgeConfig()
    size = self.config.workers or min(2 * available_cpus(), MAX_DEFAULT_WORKERS)
    self.pool = WorkerPool(size, preload=PRELOAD,
                           on_lost=lambda pid: cleanup_after_process(pid, self.config.sandbox.tmp_root))

  def close(self) -> None:
    self.pool.close()

  def __enter__(self) -> Judge:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()

  def _prepare(self, record: Record, response: str, truncated: bool) -> tuple[dict | None, tuple | None]:
    """Either a final result now, or a (path, arg, timeout, extracted) pool task."""
    if isinstance(record, MathRecord):
      answer = last_boxed(response)
      if truncated:
        return _result(answer, False, 0.0, "truncated response"), None
      if answer is None:
        return _result(None, False, 0.0, "no \\boxed{} answer"), None
      truth = ground_truth(record.ground_truth_answer)
      decided = fast_equal(truth, answer)
      if decided is not None:
        return _result(answer, decided, float(decided), None if decided else "wrong answer"), None
      timeout = self.config.math_timeout_s
      return None, (MATH_VERIFY, (truth, answer, timeout / 2), timeout, answer)
    if not isinstance(record, CodeRecord):
      raise TypeError(f"expected a MathRecord or CodeRecord, got {type(record).__name__}")
    function = record.test_method == "function"
    code = extract_code(record.prefix + response if function else response)
    if truncated:
      return _result(code, False, 0.0, "truncated response"), None
    if code is None:
      return _result(None, False, 0.0, "no code found in the response"), None
    task = build_task(record.test_method, code, record.test_list, record.test_input, record.test_output,
                      record.test_time_limit, self.config.sandbox)
    deadline = (self.config.sandbox.startup_s + len(task.tests) * (task.time_limit_s + PER_TEST_OVERHEAD_S)
                + self.config.code_slack_s)
    return None, (EVALUATE_CODE, task, deadline, code)

  def score(self, records: Sequence[Record], responses: Sequence[str], truncated: Sequence[bool] | None = None,
            progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Judge `responses[i]` against `records[i]`; `progress(k)` is called as k more results complete."""
    if len(records) != len(responses):
      raise ValueError(f"{len(records)} records but {len(responses)} responses")
    flags = list(truncated) if truncated is not None else [False] * len(records)
    if len(flags) != len(records):
      raise ValueError(f"{len(records)} records but {len(flags)} truncation flags")
    results: list[dict[str, Any] | None] = [None] * len(records)
    tasks: list[tuple] = []
    owners: list[list[int]] = []
    same_check: dict[tuple[str, str], int] = {}  # identical math pairs (common within a group) are checked once
    for i, (record, response) in enumerate(zip(records, responses)):
      done, task = self._prepare(record, response, flags[i])
      if done is not None:
        results[i] = done
      elif task[0] == MATH_VERIFY and task[1][:2] in same_check:
        owners[same_check[task[1][:2]]].append(i)
      else:
        if task[0] == MATH_VERIFY:
          same_check[task[1][:2]] = len(tasks)
        tasks.append(task)
        owners.append([i])
    if progress is not None:
      progress(sum(r is not None for r in results))

    def on_done(k: int, ok: bool, value: Any) -> None:
      path, _, _, extracted = tasks[k]
      if not ok:
        result = _result(extracted, False, 0.0, f"could not judge: {value}")
      elif path == MATH_VERIFY:
        result = _result(extracted, bool(value), float(bool(value)), None if value else "wrong answer")
      else:
        result = _code_result(extracted, value)
      for i in owners[k]:
        results[i] = dict(result)
      if progress is not None:
        progress(len(owners[k]))

    self.pool.run([(t[0], t[1]) for t in tasks], [t[2] for t in tasks], on_done)
    return results  # type: ignore[return-value]


def judge_responses(judge: Judge, records: Sequence[Record], texts: Sequence[str], lengths: Sequence[int],
                    max_new_tokens: int | None, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
  """Verdicts of decoded responses: `texts[i]` (`lengths[i]` response tokens, decoded with at most `max_new_tokens`)
  judged against `records[i]`; a response within TRUNCATION_MARGIN tokens of the limit is wrong (SPEC §7.2).
  `pass_rate` is the RL reward, `correct` (pass rate 1) what accuracy counts."""
  return judge.score(records, texts, [is_truncated(n, max_new_tokens) for n in lengths], progress)
