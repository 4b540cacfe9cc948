"""Dataset download: hub layout, validated atomic writes, and one clear failure when offline."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lrl_jax.data import download as dl
from lrl_jax.data.formats import DataFormatError, sample_path

ROOT = Path(__file__).resolve().parents[2]


def test_hub_locations_follow_the_reference_layout():
  assert dl.hub_location("MATH500") == ("Gen-Verse/MATH500", "test/MATH500.json")
  assert dl.hub_location("PrimeIntellect") == ("Gen-Verse/PrimeIntellect", "train/PrimeIntellect.json")
  assert dl.canonical_name("gsm8k_TRAIN") == "GSM8K_train"
  with pytest.raises(dl.DownloadError, match="unknown dataset"):
    dl.canonical_name("imagenet")


def test_download_validates_and_writes_atomically(tmp_path):
  calls = []

  def fetch(repo_id, filename):
    calls.append((repo_id, filename))
    return str(sample_path("gsm8k"))

  out = dl.download("gsm8k", tmp_path / "data", fetch=fetch)
  assert calls == [("Gen-Verse/GSM8K", "test/GSM8K.json")]
  assert out == tmp_path / "data" / "GSM8K.json"
  assert json.loads(out.read_text()) == json.loads(sample_path("gsm8k").read_text())
  assert sorted(p.name for p in out.parent.iterdir()) == ["GSM8K.json"]


def test_download_rejects_a_file_in_the_wrong_format(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps([{"question": "q"}]))
  with pytest.raises(DataFormatError, match="record 0"):
    dl.download("MATH500", tmp_path / "out", fetch=lambda r, f: str(bad))
  assert not (tmp_path / "out" / "MATH500.json").exists()


def test_no_network_is_one_clear_error(tmp_path, monkeypatch):
  def no_dns(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setattr(socket, "getaddrinfo", no_dns)
  with pytest.raises(dl.DownloadError) as err:
    dl.download("MBPP", tmp_path)
  message = str(err.value)
  assert "cannot download MBPP" in message and "no network" in message
  assert "https://huggingface.co/datasets/Gen-Verse/MBPP/resolve/main/test/MBPP.json" in message
  assert not list(tmp_path.iterdir())


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "lrl_jax.data", *args], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, **(env or {})}, timeout=60)


def test_cli_offline_exits_nonzero_with_message(tmp_path):
  done = _cli("download", "--dataset", "MATH500", "--out", str(tmp_path), env={"HF_HUB_OFFLINE": "1"})
  assert done.returncode == 1
  assert done.stderr.count("\n") == 1 and "cannot download MATH500" in done.stderr
  assert not list(tmp_path.iterdir())
  assert _cli("download", "--dataset", "nope", "--out", str(tmp_path)).returncode == 2


def test_cli_demo_writes_tasks(tmp_path):
  out = tmp_path / "demo.json"
  done = _cli("demo", "--n", "5", "--difficulty", "2", "--seed", "3", "--out", str(out))
  assert done.returncode == 0, done.stderr
  tasks = json.loads(out.read_text())
  assert len(tasks) == 5 and set(tasks[0]) == {"question", "ground_truth_answer", "solution"}
