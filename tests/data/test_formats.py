"""Dataset formats: the shipped samples load, and malformed records fail with file, record and field named."""

import json

import pytest

from lrl_jax.data import (
  CodeRecord, DataFormatError, MathRecord, load_records, record_from_dict, record_to_dict, sample_path)

SAMPLES = {"gsm8k": MathRecord, "math500": MathRecord, "mbpp": CodeRecord, "humaneval": CodeRecord,
           "primeintellect_stdio": CodeRecord}


@pytest.mark.parametrize("name,kind", sorted(SAMPLES.items()))
def test_samples_load_with_their_kind(name, kind):
  records = load_records(sample_path(name))
  assert 5 <= len(records) <= 8
  assert all(isinstance(r, kind) for r in records)


def test_code_samples_cover_both_modes_and_prefix():
  humaneval = load_records(sample_path("humaneval"))
  stdio = load_records(sample_path("primeintellect_stdio"))
  assert all(r.test_method == "function" and r.prefix.startswith("```python") for r in humaneval)
  assert all(r.test_method == "stdio" and len(r.test_input) == len(r.test_output) == r.num_tests for r in stdio)


def _write(tmp_path, records, name="data.json"):
  path = tmp_path / name
  if name.endswith(".jsonl"):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
  else:
    path.write_text(json.dumps(records))
  return path


@pytest.mark.parametrize("bad,field", [
  ({"ground_truth_answer": "3"}, "'question'"),
  ({"question": "q"}, "'ground_truth_answer' (math) or 'test_method' (code)"),
  ({"question": "q", "test_method": "function"}, "'test_list'"),
  ({"question": "q", "test_method": "function", "test_list": []}, "'test_list' is empty"),
  ({"question": "q", "test_method": "stdio", "test_input": ["1"]}, "'test_output'"),
  ({"question": "q", "test_method": "stdio", "test_input": ["1"], "test_output": []}, "equal length"),
  ({"question": "q", "test_method": "compile", "test_list": ["x"]}, "'test_method'"),
  ({"question": "q", "test_method": "function", "test_list": ["x"], "test_time_limit": -1}, "'test_time_limit'"),
  ({"question": "q", "test_method": "function", "test_list": [3]}, "'test_list'[0]"),
  ({"question": ["q"], "ground_truth_answer": "1"}, "'question' must be text"),
])
def test_bad_record_names_file_record_and_field(tmp_path, bad, field):
  good = {"question": "1+1?", "ground_truth_answer": "2"}
  path = _write(tmp_path, [good, bad])
  with pytest.raises(DataFormatError) as err:
    load_records(path)
  assert str(path) in str(err.value) and "record 1" in str(err.value) and field in str(err.value)


def test_jsonl_errors_name_the_line(tmp_path):
  path = _write(tmp_path, [{"question": "a", "ground_truth_answer": "1"}, {"question": "b"}], "data.jsonl")
  with pytest.raises(DataFormatError, match=r"data.jsonl: line 2: missing field"):
    load_records(path)
  path.write_text('{"question": "a", "ground_truth_answer": "1"}\n{not json\n')
  with pytest.raises(DataFormatError, match=r"line 2: invalid JSON"):
    load_records(path)


def test_file_level_errors(tmp_path):
  path = tmp_path / "x.json"
  path.write_text('{"question": "a"}')
  with pytest.raises(DataFormatError, match="expected a JSON list"):
    load_records(path)
  with pytest.raises(DataFormatError, match="cannot read"):
    load_records(tmp_path / "missing.json")
  with pytest.raises(FileNotFoundError, match="known samples"):
    sample_path("nope")


def test_numbers_become_text_and_records_round_trip():
  record = record_from_dict({"question": "q", "ground_truth_answer": 72, "extra": 1}, "here")
  assert record == MathRecord("q", "72")
  code = record_from_dict({"question": "q", "test_method": "stdio", "test_input": "1\n", "test_output": "2\n"}, "x")
  assert code.test_input == ("1\n",) and code.test_time_limit == 1.0
  assert record_from_dict(record_to_dict(code), "again") == code
