"""`python -m lrl_jax.eval`: an end-to-end sweep of two tiny checkpoints on the shipped samples, and its errors."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lrl_jax import eval as eval_cli
from lrl_jax.decode import Decoder
from lrl_jax.evaluation.sweep import EvalError, load_checkpoint_plan, parse_y_max, resolve_dataset
from lrl_jax.evaluation import report
from lrl_jax.weights import tiny
from tests.cli_util import our_lines

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLE_KEYS = {"checkpoint", "dataset", "threshold", "block_size", "prompt", "response", "extracted", "correct",
               "step_map", "tpf"}


def _config(**overrides):
  spec = importlib.util.spec_from_file_location("eval_config", REPO / "configs" / "eval.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update(dict(datasets="gsm8k,mbpp", limit=2, thresholds=(0.9, 0.5), max_new_tokens=8, batch_size=4,
                     progress=False), **overrides)
  config.reward.workers = 1
  return config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_ckpts")
  cfg = tiny.tiny_config(block_size=4)
  return [tiny.make_orbax_checkpoint(str(root / f"seed{s}"), cfg, seed=s) for s in (0, 1)]


@pytest.fixture(scope="module")
def evaluated(checkpoints, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("eval_out")
  return eval_cli.run(_config(checkpoints=",".join(checkpoints)), str(workdir)), workdir


def test_writes_every_output(evaluated):
  _, workdir = evaluated
  names = {"eval_results.json", "samples.jsonl", "eval_curves.png", "eval_table.md"}
  assert names <= set(os.listdir(workdir))
  assert not [n for n in os.listdir(workdir) if n.startswith(".")]  # no temporary file left


def test_results_shape(evaluated, checkpoints):
  results, workdir = evaluated
  on_disk = json.loads((workdir / "eval_results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert set(on_disk["y_max"]) == {"gsm8k", "mbpp"}
  assert [r["checkpoint"] for r in on_disk["runs"]] == checkpoints
  assert on_disk["config"]["thresholds"] == [0.9, 0.5] and on_disk["device"]
  for run in on_disk["runs"]:
    assert set(run["datasets"]) == {"gsm8k", "mbpp"}
    for entry in run["datasets"].values():
      assert isinstance(entry["aup"], float)
      assert [p["threshold"] for p in entry["points"]] == [0.9, 0.5]
      for p in entry["points"]:
        assert set(report.POINT_FIELDS) <= set(p)
        assert p["block_size"] == 4 and p["batch_size"] == 4 and p["n"] == 2
        assert 0 <= p["accuracy"] <= 100 and p["tpf"] >= p["tpf_total"] > 0 and p["tps"] > 0
        assert 0 < p["mean_length"] <= 8 and 0 <= p["truncation_rate"] <= 1


def test_samples_jsonl(evaluated, checkpoints):
  _, workdir = evaluated
  lines = [json.loads(line) for line in (workdir / "samples.jsonl").read_text().splitlines()]
  assert len(lines) == 2 * 2 * 2 * 2  # checkpoints x datasets x thresholds x tasks
  for line in lines:
    assert SAMPLE_KEYS <= set(line)
    assert line["checkpoint"] in checkpoints and line["dataset"] in ("gsm8k", "mbpp")
    assert line["prompt"].startswith("<|im_start|>user\n") and isinstance(line["response"], str)
    assert len(line["step_map"]) == line["response_length"] and line["tpf"] > 0


def test_plot_has_one_curve_per_checkpoint(evaluated):
  results, workdir = evaluated
  assert (workdir / "eval_curves.png").read_bytes()[:8] == PNG_SIGNATURE
  axes = report.accuracy_tpf_figure(results).axes
  assert len(axes) == 2
  for ax in axes:
    assert len(ax.get_lines()) == 2
    assert all("AUP" in t.get_text() for t in ax.get_legend().get_texts())


def test_table_sits_beside_the_paper(evaluated):
  _, workdir = evaluated
  table = (workdir / "eval_table.md").read_text()
  assert "| GSM8K | paper: LightningRL | | | 90.3 | 5.58 |" in table
  assert "| MBPP | paper: SDAR-8B-b32 |" in table


def test_sampled_responses(checkpoints, tmp_path):
  config = _config(checkpoint=checkpoints[0], datasets="GSM8K", limit=1, thresholds=(0.9,), responses_per_task=2)
  results = eval_cli.run(config, str(tmp_path))
  assert results["runs"][0]["datasets"]["gsm8k"]["points"][0]["n"] == 2
  lines = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  assert [s["task"] for s in lines] == [0, 0] and lines[0]["response"] != lines[1]["response"]


def test_timed_decode_compiles_nothing(evaluated, checkpoints):
  """After Decoder.warm_up, decoding more prompts than slots (admissions, reads, releases, engine calls over
  several page-table buckets) compiles nothing."""
  from lrl_jax.weights import load_params

  config = _config(checkpoint=checkpoints[0], thresholds=(0.9,))
  ckpt = load_checkpoint_plan(checkpoints[0], config)
  params = load_params(ckpt.path, ckpt.cfg)
  decoder = Decoder(ckpt.cfg, ckpt.decode_configs[0], config.batch_size, ckpt.tokenizer)
  prompts = [[5] * n for n in (150, 160, 170, 180, 190, 200)]  # two batches in one bucket
  decoder.warm_up(params, prompts)
  programs = decoder.scheduler.programs[2:]
  compiled = [p._cache_size() for p in programs]
  decoder.generate(params, prompts)
  assert [p._cache_size() for p in programs] == compiled


def _fails(config, tmp_path, capsys, *fragments):
  workdir = tmp_path / "out"
  assert eval_cli.execute(config, str(workdir)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  for fragment in fragments:
    assert fragment in err
  assert not workdir.exists()


def test_missing_dataset_file(checkpoints, tmp_path, capsys):
  path = str(tmp_path / "nope" / "GSM8K.json")
  _fails(_config(checkpoint=checkpoints[0], datasets=path), tmp_path, capsys, path)


def test_unknown_dataset_name(checkpoints, tmp_path, capsys):
  _fails(_config(checkpoint=checkpoints[0], datasets="gsm9k"), tmp_path, capsys, "gsm9k", "known samples")


def test_checkpoint_without_tokenizer(checkpoints, tmp_path, capsys):
  bare = tmp_path / "bare"
  shutil.copytree(checkpoints[0], bare)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    (bare / name).unlink()
  _fails(_config(checkpoint=str(bare)), tmp_path, capsys, str(bare), "no tokenizer")


@pytest.mark.parametrize("overrides, fragment", [
  (dict(thresholds=()), "empty sweep"),
  (dict(strategy="fastest"), "strategy: must be one of ('sequential', 'low_confidence_static', "
                             "'low_confidence_dynamic', 'entropy_bounded'), got 'fastest'"),
  (dict(responses_per_task=0), "responses_per_task"),
  (dict(stop_ids="2,x"), "stop_ids"),
  (dict(y_max="gsm8k=120"), "y_max"),
  (dict(max_new_tokens=4000), "max_position_embeddings"),
])
def test_bad_settings(checkpoints, tmp_path, capsys, overrides, fragment):
  _fails(_config(checkpoint=checkpoints[0], **overrides), tmp_path, capsys, fragment)


def test_one_checkpoint_setting(checkpoints, tmp_path, capsys):
  _fails(_config(checkpoint=checkpoints[0], checkpoints=checkpoints[1]), tmp_path, capsys, "not both")
  _fails(_config(), tmp_path, capsys, "no checkpoint")


def test_config_is_locked():
  config = _config()
  with pytest.raises(AttributeError, match="thresholds"):
    config.threshold = 0.5


def test_dataset_names_and_y_max():
  assert resolve_dataset("MATH_500", limit=2).key == "math500"
  assert len(resolve_dataset("humaneval").records) == 5
  assert parse_y_max("") is None and parse_y_max("0") is None and parse_y_max("88.9") == 88.9
  assert parse_y_max("GSM8K=90.3, mbpp=58") == {"gsm8k": 90.3, "mbpp": 58.0}
  for bad in ("gsm8k:90", "gsm8k=90,mbpp", "-1", "x"):
    with pytest.raises(EvalError, match="y_max"):
      parse_y_max(bad)


def test_cli_missing_checkpoint(tmp_path):
  cmd = [sys.executable, "-m", "lrl_jax.eval", "--config", str(REPO / "configs" / "eval.py"),
         "--workdir", str(tmp_path / "w"), "--config.checkpoint=/nonexistent"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  assert our_lines(proc.stderr) == ["error: /nonexistent: checkpoint directory not found"]
