"""notebooks/sdar_lightningrl.ipynb runs every cell on CPU with a tiny SDAR in the hub's layout in place of the
download (LRL_SDAR_DIR), without a network, and writes its accuracy-TPF plot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from lrl_jax.weights import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sdar_notebook_executes_on_a_hub_layout_stand_in(monkeypatch, tmp_path):
  hub_dir = tiny.make_hub_layout_checkpoint(str(tmp_path / "SDAR-1.7B-Chat"), tied=True)  # 1.7B ties its lm_head
  monkeypatch.setenv("LRL_SDAR_DIR", hub_dir)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt fails instead of reaching out
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "sdar_lightningrl.ipynb"), as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  assert all(cell.execution_count is not None for cell in code)
  outputs = "".join(o.get("text", "") for cell in code for o in cell.get("outputs", []))
  assert "training fits" in outputs and "lightningrl" in outputs and "TPF" in outputs
  work = tmp_path / "sdar_work"
  assert (work / "curves.png").stat().st_size > 0
  assert (work / "lightningrl" / "final").is_dir() and (work / "hf_lightningrl" / "config.json").is_file()
  assert sum(1 for _ in open(work / "out.jsonl")) == 2
