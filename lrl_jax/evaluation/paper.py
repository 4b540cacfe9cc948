"""Published figures to compare against (SPEC §10: SDAR-8B-b32 family, Table 1) and dataset-name normalisation."""

from __future__ import annotations

import re
from typing import NamedTuple


class PaperPoint(NamedTuple):
  """One cell of the paper's Table 1: accuracy %, TPF, AUP."""

  accuracy: float
  tpf: float
  aup: float


DISPLAY_NAMES = {"gsm8k": "GSM8K", "math500": "MATH500", "mbpp": "MBPP", "humaneval": "HumanEval"}

PAPER: dict[str, dict[str, PaperPoint]] = {
  "SDAR-8B-b32": {
    "gsm8k": PaperPoint(88.9, 2.85, 252.5), "math500": PaperPoint(63.6, 4.81, 299.5),
    "mbpp": PaperPoint(58.0, 2.44, 81.1), "humaneval": PaperPoint(73.5, 2.39, 123.8),
  },
  "GRPO(traj)": {
    "gsm8k": PaperPoint(86.6, 4.87, 414.1), "math500": PaperPoint(61.6, 5.04, 301.2),
    "mbpp": PaperPoint(56.8, 2.70, 152.7), "humaneval": PaperPoint(76.0, 2.33, 176.7),
  },
  "LightningRL": {
    "gsm8k": PaperPoint(90.3, 5.58, 492.4), "math500": PaperPoint(63.0, 6.28, 407.5),
    "mbpp": PaperPoint(58.3, 11.10, 641.6), "humaneval": PaperPoint(72.6, 6.30, 450.1),
  },
}

WALL_CLOCK_DATASET = "gsm8k"
WALL_CLOCK_HARDWARE = "one H100, served by SGLang"
WALL_CLOCK_TPS = {"LightningRL": 336.03, "SDAR-8B-b32": 105.55}
WALL_CLOCK_TPF = {"LightningRL": 5.58}
WEIGHT_BYTES_8B = 16.4e9
H100_BANDWIDTH = 3.35e12


def normalize_dataset(name: str) -> str:
  """Canonical dataset key: "GSM8K", "math_500", "Human-Eval" -> "gsm8k", "math500", "humaneval"; others lower-cased."""
  key = re.sub(r"[^a-z0-9]", "", name.lower())
  return key if key in DISPLAY_NAMES else name.strip().lower()


def display_name(name: str) -> str:
  """The paper's spelling of a known dataset, else the normalised name."""
  key = normalize_dataset(name)
  return DISPLAY_NAMES.get(key, key)


def paper_rows(name: str) -> list[tuple[str, PaperPoint]]:
  """(model, figures) of every paper model on this dataset; empty when the paper did not report it."""
  key = normalize_dataset(name)
  return [(model, table[key]) for model, table in PAPER.items() if key in table]


def forward_floor_seconds(weight_bytes: float = WEIGHT_BYTES_8B, bandwidth: float = H100_BANDWIDTH) -> float:
  """Memory-bound lower bound of one batch-1 forward: every weight byte read once (~4.9 ms for the 8B on an H100)."""
  return weight_bytes / bandwidth


def tps_ceiling(tpf: float, weight_bytes: float = WEIGHT_BYTES_8B, bandwidth: float = H100_BANDWIDTH) -> float:
  """Batch-1 TPS upper bound at a given TPF (~1140 for the 8B on an H100 at TPF 5.58)."""
  return tpf / forward_floor_seconds(weight_bytes, bandwidth)
