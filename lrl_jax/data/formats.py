"""Dataset records of SPEC §8 (math and code) and loaders whose errors name the file, record and field."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Union

from lrl_jax.data.demo_tasks import make_tasks

SAMPLES_DIR = Path(__file__).with_name("samples")

# Published dataset names (Gen-Verse releases used by the reference) and the record kind each holds.
DATASET_KINDS = {
  "GSM8K": "math",
  "GSM8K_train": "math",
  "MATH500": "math",
  "MATH_train": "math",
  "MBPP": "code",
  "HumanEval": "code",
  "PrimeIntellect": "code",
}

TEST_METHODS = ("function", "stdio")


class DataFormatError(ValueError):
  """A record that does not follow the published format; the message says where and which field."""


@dataclasses.dataclass(frozen=True)
class MathRecord:
  """A math problem: the answer is compared with `ground_truth_answer` (GSM8K may carry `rationale #### N`)."""

  question: str
  ground_truth_answer: str
  kind: ClassVar[str] = "math"


@dataclasses.dataclass(frozen=True)
class CodeRecord:
  """A coding problem judged by assertions (`function`) or by stdin/stdout pairs (`stdio`)."""

  question: str
  test_method: str
  test_list: tuple[str, ...] = ()
  prefix: str = ""
  test_input: tuple[str, ...] = ()
  test_output: tuple[str, ...] = ()
  test_time_limit: float = 1.0
  kind: ClassVar[str] = "code"

  @property
  def num_tests(self) -> int:
    """Number of tests the record defines in its mode."""
    return len(self.test_list) if self.test_method == "function" else len(self.test_input)


Record = Union[MathRecord, CodeRecord]


def _text(obj: Mapping[str, Any], field: str, where: str, required: bool = True) -> str:
  """A text field; numbers are accepted and written as text (published ground truths are sometimes ints)."""
  if field not in obj or obj[field] is None:
    if required:
      raise DataFormatError(f"{where}: missing field '{field}'")
    return ""
  value = obj[field]
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise DataFormatError(f"{where}: field '{field}' must be text, got {type(value).__name__}")
  return value if isinstance(value, str) else str(value)


def _text_list(obj: Mapping[str, Any], field: str, where: str) -> tuple[str, ...]:
  """A list of strings; a single string counts as a list of one."""
  if field not in obj or obj[field] is None:
    raise DataFormatError(f"{where}: missing field '{field}'")
  value = obj[field]
  if isinstance(value, str):
    return (value,)
  if not isinstance(value, list):
    raise DataFormatError(f"{where}: field '{field}' must be a list of strings, got {type(value).__name__}")
  for i, item in enumerate(value):
    if not isinstance(item, str):
      raise DataFormatError(f"{where}: field '{field}'[{i}] must be a string, got {type(item).__name__}")
  return tuple(value)


def _time_limit(obj: Mapping[str, Any], where: str) -> float:
  """`test_time_limit` in seconds, default 1 (SPEC §7.2)."""
  value = obj.get("test_time_limit", 1.0)
  if value is None:
    return 1.0
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise DataFormatError(f"{where}: field 'test_time_limit' must be a positive number of seconds, got {value!r}")
  return float(value)


def record_from_dict(obj: Any, where: str) -> Record:
  """Validate one raw record; `where` (e.g. 'data.json: record 3') prefixes every error."""
  if not isinstance(obj, Mapping):
    raise DataFormatError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
  question = _text(obj, "question", where)
  if "test_method" in obj:
    method = obj["test_method"]
    if method not in TEST_METHODS:
      raise DataFormatError(f"{where}: field 'test_method' must be 'function' or 'stdio', got {method!r}")
    limit = _time_limit(obj, where)
    prefix = _text(obj, "prefix", where, required=False)
    if method == "function":
      tests = _text_list(obj, "test_list", where)
      if not tests:
        raise DataFormatError(f"{where}: field 'test_list' is empty")
      return CodeRecord(question, method, test_list=tests, prefix=prefix, test_time_limit=limit)
    inputs = _text_list(obj, "test_input", where)
    outputs = _text_list(obj, "test_output", where)
    if len(inputs) != len(outputs) or not inputs:
      raise DataFormatError(
        f"{where}: fields 'test_input' and 'test_output' must be non-empty and of equal length "
        f"(got {len(inputs)} and {len(outputs)})")
    return CodeRecord(question, method, prefix=prefix, test_input=inputs, test_output=outputs, test_time_limit=limit)
  if "ground_truth_answer" in obj:
    return MathRecord(question, _text(obj, "ground_truth_answer", where))
  raise DataFormatError(f"{where}: missing field 'ground_truth_answer' (math) or 'test_method' (code)")


def record_to_dict(record: Record) -> dict[str, Any]:
  """The record as JSON-ready fields, in the published field names."""
  out = dataclasses.asdict(record)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def read_raw(path: str | Path) -> list[tuple[str, Any]]:
  """Raw records of a JSON list file or a JSONL file, each paired with its location for error messages."""
  path = Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except OSError as e:
    raise DataFormatError(f"{path}: cannot read ({e.strerror or e})") from e
  if path.suffix == ".jsonl":
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
      if not line.strip():
        continue
      try:
        rows.append((f"{path}: line {n}", json.loads(line)))
      except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: line {n}: invalid JSON ({e.msg})") from e
    return rows
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFormatError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from e
  if not isinstance(data, list):
    raise DataFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
  return [(f"{path}: record {i}", obj) for i, obj in enumerate(data)]


def load_records(path: str | Path) -> list[Record]:
  """Load and validate a dataset file (`.json` list or `.jsonl`)."""
  return [record_from_dict(obj, where) for where, obj in read_raw(path)]


def sample_path(name: str) -> Path:
  """Path of a shipped sample file by stem (gsm8k, math500, mbpp, humaneval, primeintellect_stdio), any spelling."""
  stems = {p.stem: p for p in SAMPLES_DIR.glob("*.json")}
  loose = {re.sub(r"[^a-z0-9]", "", stem): path for stem, path in stems.items()}
  path = stems.get(name) or stems.get(name.lower()) or loose.get(re.sub(r"[^a-z0-9]", "", name.lower()))
  if path is None:
    raise FileNotFoundError(f"no sample named {name!r}; known samples: {', '.join(sorted(stems))}")
  return path


def demo_records(size: int, difficulty: int, seed: int) -> list[Record]:
  """`size` procedural demo tasks (lrl_jax/data/demo_tasks.py) as math records."""
  return [record_from_dict(t.to_dict(), f"demo task {i}") for i, t in enumerate(make_tasks(size, difficulty, seed))]


def dataset_path(spec: str) -> Path:
  """The file a dataset spec names: an existing file, else a shipped sample; DataFormatError says which is missing."""
  path = Path(spec)
  if path.is_file():
    return path
  if path.exists():
    raise DataFormatError(f"{spec}: is a directory, not a dataset file")
  if "/" in spec or spec.endswith((".json", ".jsonl")):
    raise DataFormatError(f"{spec}: file not found")
  try:
    return sample_path(spec)
  except FileNotFoundError as e:
    raise DataFormatError(f"{spec}: neither a dataset file nor a shipped sample ({e})") from None
