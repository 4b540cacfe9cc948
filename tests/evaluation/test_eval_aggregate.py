"""Dataset-level metrics from per-sample records (SPEC §6)."""

import pytest

from lrl_jax.evaluation.aggregate import make_point, summarize, tps


def _record(correct, length, forwards, total, truncated=False):
  return {"correct": correct, "response_length": length, "num_forwards": forwards,
          "forwards_total": total, "truncated": truncated}


RECORDS = [_record(True, 30, 3, 4), _record(False, 2, 2, 3, truncated=True)]


def test_dataset_tpf_is_ratio_of_sums_not_mean_of_ratios():
  s = summarize(RECORDS)
  assert s["tpf"] == pytest.approx(32 / 5)  # 6.4
  mean_of_ratios = (30 / 3 + 2 / 2) / 2  # 5.5
  assert s["tpf"] != pytest.approx(mean_of_ratios)
  assert s["tpf_total"] == pytest.approx(32 / 7)


def test_accuracy_length_truncation_n():
  s = summarize(RECORDS + [_record(True, 8, 4, 5)])
  assert s["accuracy"] == pytest.approx(200 / 3)
  assert s["mean_length"] == pytest.approx(40 / 3)
  assert s["truncation_rate"] == pytest.approx(1 / 3)
  assert s["n"] == 3


def test_tps_and_point():
  assert tps(500, 2.0) == 250.0
  with pytest.raises(ValueError):
    tps(500, 0.0)
  p = make_point(RECORDS, threshold=0.9, block_size=32, decode_seconds=0.5, batch_size=8, device="cpu")
  assert p["tps"] == pytest.approx(64.0)
  assert make_point(RECORDS, threshold=0.9, block_size=32, decode_seconds=0.5, batch_size=8, device="cpu",
                    tokens=10)["tps"] == pytest.approx(20.0)
  assert set(p) == {"threshold", "block_size", "accuracy", "tpf", "tpf_total", "tps", "batch_size", "device",
                    "mean_length", "truncation_rate", "n"}


def test_bad_records():
  with pytest.raises(ValueError, match="at least one"):
    summarize([])
  with pytest.raises(ValueError, match="forwards_total"):
    summarize([{"correct": True, "response_length": 3, "num_forwards": 1, "truncated": False}])
