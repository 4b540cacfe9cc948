"""A finished run is a model: W/final is an Orbax model dir, and generate / eval / convert take W itself (its newest
checkpoint's params); eval knows the demo's held-out problems; a damaged model dir is one error line."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from lrl_jax import convert, generate, train
from lrl_jax.run import wiring
from lrl_jax import eval as eval_cli
from lrl_jax.run.checkpoints import Checkpoints
from lrl_jax.data.templates import build_prompt
from lrl_jax.weights import load_checkpoint
from tests.evaluation.test_eval_cli import _config as eval_config
from tests.run.util import load


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  config = load("test")
  config.train.steps, config.warm_start.steps, config.data.eval = 1, 0, ""
  workdir = tmp_path_factory.mktemp("run")
  summary = train.run(config, str(workdir))
  assert summary["final_model"] == str(workdir / "final")
  return workdir


def test_final_is_a_model_dir_of_the_last_params(run_dir):
  cfg, params, tok = load_checkpoint(str(run_dir / "final"))
  assert tok is not None and cfg.mask_token_id is not None
  ckpt = Checkpoints(str(run_dir))
  state, _ = ckpt.restore(ckpt.latest_step(), None)
  ckpt.close()
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state["params"])):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  assert sorted(os.listdir(run_dir / "model_files")) == sorted(f for f in os.listdir(run_dir / "final")
                                                               if f != "params")


def test_generate_takes_the_run_dir(run_dir, tmp_path, capsys):
  src = tmp_path / "in.jsonl"
  src.write_text(json.dumps({"prompt": "What is 2+2?"}) + "\n" + json.dumps({"prompt_ids": [5, 6, 7]}) + "\n")
  outs = []
  for checkpoint in (run_dir, run_dir / "final"):
    out = tmp_path / f"{checkpoint.name}.jsonl"
    assert generate.main([f"--checkpoint={checkpoint}", f"--input={src}", f"--output={out}", "--greedy",
                          "--max_new_tokens=8", "--batch_size=2"]) == 0, capsys.readouterr().err
    outs.append([json.loads(line) for line in out.read_text().splitlines()])
  assert outs[0] == outs[1] and all(len(r["response_ids"]) > 0 for r in outs[0])


def test_eval_takes_the_run_dir_and_the_demo_dataset(run_dir, tmp_path):
  config = eval_config(checkpoints=f"{run_dir},{run_dir / 'final'}", datasets="demo", limit=4, thresholds=(0.5,))
  results = eval_cli.run(config, str(tmp_path))
  points = [run["datasets"]["demo"]["points"][0] for run in results["runs"]]
  assert points[0]["n"] == 4 and {k: points[0][k] for k in ("accuracy", "tpf")} == {
    k: points[1][k] for k in ("accuracy", "tpf")}
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  d = load("test").data  # the run's own data settings define its held-out problems
  want = wiring.demo_eval_records(d.eval_size, d.demo_difficulty, d.shuffle_seed)[:4]
  assert [s["prompt"] for s in samples[:4]] == [build_prompt(r) for r in want]


def test_convert_takes_the_run_dir(run_dir, tmp_path):
  out = tmp_path / "hf"
  assert convert.main(["--to_hf", f"--ckpt_dir={run_dir}", f"--out_dir={out}"]) == 0
  _, hf_params, _ = load_checkpoint(str(out))
  _, final_params, _ = load_checkpoint(str(run_dir / "final"))
  for a, b in zip(jax.tree.leaves(hf_params), jax.tree.leaves(final_params)):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  assert sorted(os.listdir(tmp_path)) == ["hf"]  # the temporary model dir is gone


def test_damaged_model_dir_is_one_error_line(run_dir, tmp_path, capsys):
  bad = tmp_path / "bad"
  shutil.copytree(run_dir / "final", bad)
  data = [os.path.join(d, f) for d, _, names in os.walk(bad / "params") for f in names]
  biggest = max(data, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  src = tmp_path / "in.jsonl"
  src.write_text(json.dumps({"prompt_ids": [5, 6]}) + "\n")
  assert generate.main([f"--checkpoint={bad}", f"--input={src}", f"--output={tmp_path / 'out.jsonl'}"]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: the weights do not load ("), lines
  assert convert.main(["--to_hf", f"--ckpt_dir={bad}", f"--out_dir={tmp_path / 'hf'}"]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: cannot be converted ("), lines
  assert sorted(os.listdir(tmp_path)) == ["bad", "in.jsonl"]
