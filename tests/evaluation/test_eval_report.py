"""eval_results.json shape, the accuracy-vs-TPF plot and the Markdown table."""

import json
import subprocess
import sys

import pytest

from lrl_jax.evaluation import report
from lrl_jax.evaluation.aup import aup

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _point(threshold, accuracy, tpf):
  return {"threshold": threshold, "block_size": 32, "accuracy": accuracy, "tpf": tpf, "tpf_total": tpf / 2,
          "tps": 100.0 * tpf, "batch_size": 4, "device": "cpu", "mean_length": 120.0, "truncation_rate": 0.0,
          "n": 50}


def _runs():
  return [
    {"checkpoint": "base", "datasets": {
      "GSM8K": {"points": [_point(0.9, 80.0, 2.0), _point(0.7, 78.0, 3.0)]},
      "mbpp": {"points": [_point(0.9, 40.0, 1.5)]}}},
    {"checkpoint": "rl/step_100", "datasets": {
      "gsm8k": {"points": [_point(0.9, 82.0, 4.0), _point(0.7, 79.0, 5.0), _point(0.5, 70.0, 6.0)]}}},
  ]


@pytest.fixture
def results():
  return report.build_results(_runs(), config={"max_new_tokens": 256}, device="cpu")


def test_compute_aups_default_and_override():
  runs = _runs()
  y_max = report.compute_aups(runs)
  assert y_max == {"gsm8k": 82.0, "mbpp": 40.0}
  pts = [(2.0, 80.0), (3.0, 78.0)]
  assert runs[0]["datasets"]["GSM8K"]["aup"] == pytest.approx(aup(pts, 82.0))
  assert report.compute_aups(runs, y_max_override={"GSM8K": 90.0}) == {"gsm8k": 90.0, "mbpp": 40.0}
  assert runs[0]["datasets"]["GSM8K"]["aup"] == pytest.approx(aup(pts, 90.0))
  assert report.compute_aups(runs, y_max_override=95.0) == {"gsm8k": 95.0, "mbpp": 95.0}


def test_duplicate_dataset_spelling_rejected():
  runs = [{"checkpoint": "x", "datasets": {"gsm8k": {"points": [_point(0.9, 1.0, 1.0)]},
                                           "GSM8K": {"points": [_point(0.9, 1.0, 1.0)]}}}]
  with pytest.raises(ValueError, match="twice"):
    report.compute_aups(runs)


def test_json_has_documented_shape(results, tmp_path):
  path = report.write_json(results, tmp_path / "eval_results.json")
  doc = json.loads(path.read_text())
  assert set(doc) == {"y_max", "runs", "config", "device"}
  assert doc["y_max"] == {"gsm8k": 82.0, "mbpp": 40.0}
  assert doc["config"] == {"max_new_tokens": 256} and doc["device"] == "cpu"
  assert [r["checkpoint"] for r in doc["runs"]] == ["base", "rl/step_100"]
  for run in doc["runs"]:
    assert set(run) == {"checkpoint", "datasets"}
    for entry in run["datasets"].values():
      assert set(entry) == {"aup", "points"} and isinstance(entry["aup"], float)
      for p in entry["points"]:
        assert list(p) == list(report.POINT_FIELDS)
        assert isinstance(p["block_size"], int) and isinstance(p["accuracy"], float)
  assert set(doc["runs"][0]["datasets"]) == {"gsm8k", "mbpp"}
  assert [p.name for p in tmp_path.iterdir()] == ["eval_results.json"]  # no temp file left behind


def test_point_missing_field_rejected():
  bad = _runs()
  del bad[1]["datasets"]["gsm8k"]["points"][0]["tps"]
  with pytest.raises(ValueError, match="tps"):
    report.build_results(bad, config={}, device="cpu")


def test_figure_curves_and_png(results, tmp_path):
  fig = report.accuracy_tpf_figure(results)
  axes = fig.get_axes()
  assert [ax.get_title().split()[0] for ax in axes] == ["GSM8K", "MBPP"]
  assert [len(ax.get_lines()) for ax in axes] == [2, 1]
  labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
  gsm8k = [r["datasets"]["gsm8k"]["aup"] for r in results["runs"]]
  assert labels == [f"base (AUP {gsm8k[0]:.1f})", f"rl/step_100 (AUP {gsm8k[1]:.1f})"]
  path = report.write_plot(results, tmp_path / "curves.png")
  assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_table_has_runs_and_paper_rows(results):
  table = report.markdown_table(results)
  assert "| GSM8K | paper: LightningRL | | | 90.3 | 5.58 | | | | 492.4 |" in table
  assert "| MBPP | paper: SDAR-8B-b32 |" in table
  rl = results["runs"][1]["datasets"]["gsm8k"]["aup"]
  assert f"| GSM8K | rl/step_100 | 0.9 | 32 | 82.0 | 4.00 | 2.00 | 400.0 (4, cpu) | 50 | {rl:.1f} |" in table
  assert "336.03 TPS" in table


def test_table_without_paper_dataset():
  runs = [{"checkpoint": "x", "datasets": {"tiny_math": {"points": [_point(0.9, 0.0, 1.0)]}}}]
  table = report.markdown_table(report.build_results(runs, config={}, device="cpu"))
  assert "tiny_math" in table and "paper:" not in table and "TPS;" not in table


def test_write_report(results, tmp_path):
  paths = report.write_report(results, tmp_path / "out")
  assert sorted(p.name for p in paths.values()) == ["eval_curves.png", "eval_results.json", "eval_table.md"]
  assert json.loads(paths["json"].read_text())["y_max"]["gsm8k"] == 82.0


def test_evaluation_package_does_not_import_jax():
  code = ("import sys; import lrl_jax.evaluation.report, lrl_jax.evaluation.aggregate; "
          "assert 'jax' not in sys.modules, 'jax imported'")
  subprocess.run([sys.executable, "-c", code], check=True)
