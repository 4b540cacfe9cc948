"""Dataset-level metrics of one decode run (SPEC §6): accuracy, TPF as a ratio of sums, TPS, length, truncation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RECORD_KEYS = ("correct", "response_length", "num_forwards", "forwards_total", "truncated")


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, float | int]:
  """Accuracy %, TPF (sum lengths / sum denoising forwards), commit-inclusive TPF, mean length, truncation rate, n.

  TPF is the dataset-level ratio of sums, not the mean of per-sample ratios (which over-weights short responses).
  """
  if not records:
    raise ValueError("summarize needs at least one per-sample record; got none")
  for i, record in enumerate(records):
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
      raise ValueError(f"record {i} lacks {missing}; every record needs {list(RECORD_KEYS)}")
  n = len(records)
  length = sum(int(r["response_length"]) for r in records)
  forwards = sum(int(r["num_forwards"]) for r in records)
  forwards_total = sum(int(r["forwards_total"]) for r in records)
  if forwards <= 0 or forwards_total <= 0:
    raise ValueError(f"records count no forwards (num_forwards {forwards}, forwards_total {forwards_total})")
  return {
    "accuracy": 100.0 * sum(bool(r["correct"]) for r in records) / n,
    "tpf": length / forwards,
    "tpf_total": length / forwards_total,
    "mean_length": length / n,
    "truncation_rate": sum(bool(r["truncated"]) for r in records) / n,
    "n": n,
  }


def tps(tokens: int, decode_seconds: float) -> float:
  """Counted tokens per wall-clock decode second (measured after compilation)."""
  if decode_seconds <= 0:
    raise ValueError(f"decode_seconds must be > 0, got {decode_seconds!r}")
  return tokens / decode_seconds


def make_point(records: Sequence[Mapping[str, Any]], *, threshold: float, block_size: int,
               decode_seconds: float, batch_size: int, device: str, tokens: int | None = None) -> dict[str, Any]:
  """One point of eval_results.json; `tokens` (for TPS) defaults to the summed response lengths."""
  summary = summarize(records)
  if tokens is None:
    tokens = sum(int(r["response_length"]) for r in records)
  return {
    "threshold": float(threshold),
    "block_size": int(block_size),
    **summary,
    "tps": tps(tokens, decode_seconds),
    "batch_size": int(batch_size),
    "device": str(device),
  }
