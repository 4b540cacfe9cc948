"""Published figures (SPEC §10) and dataset-name normalisation."""

import pytest

from lrl_jax.evaluation import paper


@pytest.mark.parametrize("name", ["gsm8k", "GSM8K", "Gsm-8k", " gsm8k "])
def test_gsm8k_spellings(name):
  assert paper.normalize_dataset(name) == "gsm8k"


def test_other_names():
  assert paper.normalize_dataset("MATH500") == paper.normalize_dataset("math_500") == "math500"
  assert paper.normalize_dataset("Human-Eval") == "humaneval"
  assert paper.normalize_dataset("MATH_train") == "math_train"
  assert paper.display_name("humaneval") == "HumanEval"
  assert paper.paper_rows("MATH_train") == []


def test_table_one_figures():
  rows = dict(paper.paper_rows("GSM8K"))
  assert list(rows) == ["SDAR-8B-b32", "GRPO(traj)", "LightningRL"]
  assert rows["LightningRL"] == (90.3, 5.58, 492.4)
  assert paper.PAPER["LightningRL"]["mbpp"].tpf == 11.10
  assert all(len(table) == 4 for table in paper.PAPER.values())


def test_wall_clock_floor():
  assert paper.forward_floor_seconds() == pytest.approx(4.9e-3, abs=0.05e-3)
  assert 1 / paper.forward_floor_seconds() == pytest.approx(204, abs=1)
  assert paper.tps_ceiling(5.58) == pytest.approx(1140, abs=5)
  assert paper.WALL_CLOCK_TPS["LightningRL"] / paper.WALL_CLOCK_TPS["SDAR-8B-b32"] == pytest.approx(3.18, abs=0.01)
