"""`python -m lrl_jax.reward --input=IN.jsonl --output=OUT.jsonl`: judge generations from any engine.

Each input record carries the dataset fields (SPEC §8) plus `response` (text), and optionally `response_length`
and `max_new_tokens` (truncation rule). The output repeats each record with `extracted`, `correct`, `pass_rate`
and `error` added. Bad input stops with one message naming the file, record and field (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lrl_jax.data.formats import DataFormatError, Record, read_raw, record_from_dict
from lrl_jax.rewards.judge import Judge, JudgeConfig, is_truncated


def _optional_int(obj: dict[str, Any], name: str, where: str) -> int | None:
  value = obj.get(name)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, int):
    raise DataFormatError(f"{where}: field '{name}' must be an integer, got {value!r}")
  return value


def load_inputs(path: str) -> tuple[list[dict[str, Any]], list[Record], list[str], list[bool]]:
  """Raw records, validated records, responses and truncation flags; DataFormatError names the bad spot."""
  raws, records, responses, truncated = [], [], [], []
  for where, obj in read_raw(path):
    record = record_from_dict(obj, where)
    response = obj.get("response")
    if not isinstance(response, str):
      problem = "missing" if response is None else f"must be text, got {type(response).__name__}"
      raise DataFormatError(f"{where}: field 'response' {problem}")
    length = _optional_int(obj, "response_length", where)
    limit = _optional_int(obj, "max_new_tokens", where)
    raws.append(obj)
    records.append(record)
    responses.append(response)
    truncated.append(is_truncated(length, limit))
  return raws, records, responses, truncated


def write_outputs(path: str, rows: list[dict[str, Any]]) -> None:
  """JSONL (or a JSON list for a `.json` path), written to a temp file in the same directory, then renamed."""
  out = Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      if out.suffix == ".json":
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")
      else:
        for row in rows:
          f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
  finally:
    tmp.unlink(missing_ok=True)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m lrl_jax.reward", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True, help="JSONL (or JSON list) of records with a 'response' field")
  parser.add_argument("--output", required=True, help="where to write the scored records (JSONL, or .json)")
  parser.add_argument("--workers", type=int, default=None,
                      help="judge worker processes (default: 2 per CPU, at most 32)")
  parser.add_argument("--math-timeout", type=float, default=JudgeConfig.math_timeout_s,
                      help="seconds per math-verify check before its worker is killed")
  parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Score the input file; 0 on success, 2 on bad input."""
  args = _parser().parse_args(argv)
  try:
    raws, records, responses, truncated = load_inputs(args.input)
  except DataFormatError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from tqdm import tqdm

  start = time.perf_counter()
  config = JudgeConfig(workers=args.workers, math_timeout_s=args.math_timeout)
  with Judge(config) as judge, tqdm(total=len(records), desc="judging", unit="resp",
                                    disable=args.no_progress, file=sys.stderr) as bar:
    results = judge.score(records, responses, truncated, progress=bar.update)
  write_outputs(args.output, [{**raw, **result} for raw, result in zip(raws, results)])
  n = max(1, len(results))
  accuracy = sum(r["correct"] for r in results) / n
  rate = sum(r["pass_rate"] for r in results) / n
  print(f"scored {len(results)} responses in {time.perf_counter() - start:.1f}s: accuracy {accuracy:.3f}, "
        f"mean pass rate {rate:.3f} -> {args.output}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
