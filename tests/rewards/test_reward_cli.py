"""`python -m lrl_jax.reward`: scores records from any engine, and refuses bad input with one clear message."""

import json
import os
import subprocess
import sys
from pathlib import Path

from lrl_jax.data import sample_path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "lrl_jax.reward", *args, "--noprogress", "--workers=2"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def _rows():
  rows = []
  for name in ("gsm8k", "mbpp", "primeintellect_stdio"):
    for record in json.loads(sample_path(name).read_text())[:2]:
      good = {**record, "response": record.pop("reference_response")}
      rows += [good, {**good, "response": "I am not sure."}]
  rows.append({**rows[0], "response_length": 508, "max_new_tokens": 512})
  return rows


def test_scores_a_mixed_file(tmp_path):
  src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  rows = _rows()
  src.write_text("".join(json.dumps(r) + "\n" for r in rows))
  done = _cli(f"--input={src}", f"--output={out}")
  assert done.returncode == 0, done.stderr
  scored = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(scored) == len(rows)
  for row, result in zip(rows, scored):
    assert {k: result[k] for k in row} == row
    assert set(result) - set(row) == {"extracted", "correct", "pass_rate", "error"}
  assert [r["correct"] for r in scored] == [True, False] * 6 + [False]
  assert scored[-1]["error"] == "truncated response"
  assert "accuracy 0.462" in done.stderr
  assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]


def test_json_list_in_and_out(tmp_path):
  src, out = tmp_path / "in.json", tmp_path / "out.json"
  src.write_text(json.dumps([{"question": "1+1?", "ground_truth_answer": "2", "response": "\\boxed{2}"}]))
  assert _cli(f"--input={src}", f"--output={out}").returncode == 0
  assert json.loads(out.read_text())[0]["correct"] is True


def test_bad_input_names_file_line_and_field(tmp_path):
  src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  src.write_text(json.dumps({"question": "q", "ground_truth_answer": "1", "response": "x"}) + "\n"
                 + json.dumps({"question": "q", "ground_truth_answer": "1"}) + "\n")
  done = _cli(f"--input={src}", f"--output={out}")
  assert done.returncode == 2
  assert done.stderr.strip() == f"error: {src}: line 2: field 'response' missing"
  src.write_text(json.dumps({"question": "q", "test_method": "function", "response": "x"}) + "\n")
  done = _cli(f"--input={src}", f"--output={out}")
  assert done.returncode == 2 and "line 1: missing field 'test_list'" in done.stderr
  src.write_text(json.dumps({"question": "q", "ground_truth_answer": "1", "response": "x",
                             "max_new_tokens": "many"}) + "\n")
  assert "field 'max_new_tokens' must be an integer" in _cli(f"--input={src}", f"--output={out}").stderr
  assert not out.exists()


def test_output_that_is_a_directory_fails_before_judging(tmp_path):
  """Issue table row: `--output=` an existing directory used to fail with IsADirectoryError after all the judging."""
  src, out = tmp_path / "in.jsonl", tmp_path / "out_dir"
  out.mkdir()
  src.write_text(json.dumps({"question": "q", "ground_truth_answer": "1", "response": "\\boxed{1}"}) + "\n")
  done = _cli(f"--input={src}", f"--output={out}")
  assert done.returncode == 2
  assert done.stderr.strip() == f"error: {out}: is a directory, not a file"
  assert "judging" not in done.stderr and os.listdir(out) == []


def test_bad_flag_is_one_line(tmp_path):
  done = _cli("--input=x.jsonl", "--output=y.jsonl", "--math_timeout=soon")
  assert done.returncode == 2 and done.stderr.strip() == "error: --math_timeout: 'soon' is not a number"
  done = _cli("--input=x.jsonl")
  assert done.returncode == 2 and done.stderr.strip() == "error: --output: required"
