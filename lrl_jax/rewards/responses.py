"""Judge input and output files: dataset records (SPEC §8) carrying a `response`, and the same records scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lrl_jax import files
from lrl_jax.data.formats import DataFormatError, Record, read_raw, record_from_dict
from lrl_jax.rewards.judge import is_truncated


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
  """JSONL (or a JSON list for a `.json` path), written atomically."""
  if Path(path).suffix == ".json":
    files.write_with(path, lambda f: f.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n"))
  else:
    files.write_jsonl(path, rows)
