"""`train` and `sft` refuse bad configs before any work: exit code 2, one `error:` line naming the key, nothing
written (the rows of issue 15's table; the resume and disk rows are in test_resume.py)."""

import os

import pytest

from lrl_jax import sft, train
from tests.run.util import ROOT

CONFIG = f"--config={os.path.join(ROOT, 'configs', 'test.py')}"

TABLE = [
  ("--config.optim.lr=nan", "error: config.optim.lr: must be finite, got nan"),
  ("--config.optim.lr=-1e-3", "error: config.optim.lr: must be > 0, got -0.001"),
  ("--config.rollout.num_responses=1", "error: config.rollout.num_responses: must be >= 2, got 1"),
  ("--config.rollout.num_prompts=0", "error: config.rollout.num_prompts: must be >= 1, got 0"),
  ("--config.warm_start.steps=-3", "error: config.warm_start.steps: must be >= 0, got -3"),
  ("--config.rollout.block_size=0", "error: config.rollout.block_size: must be >= 1, got 0"),
  ("--config.train.micro_batch_rows=0", "error: config.train.micro_batch_rows: must be >= 1, got 0"),
  ("--config.train.checkpoint_every=0", "error: config.train.checkpoint_every: must be >= 1, got 0"),
  ("--config.rollout.threshold=1.5", "error: config.rollout.threshold: must be in [0, 1], got 1.5"),
  ("--config.rollout.max_new_tokens=1e8", "error: config.rollout.max_new_tokens: '1e8' is not an integer"),
  ("--config.rollout.max_new_tokens=100000000",
   "error: config.rollout.max_new_tokens: 100000000 leaves no room for a prompt within the model's "
   "max_position_embeddings=4096"),
  ("--config.algorithm=bogus",
   "error: config.algorithm: must be one of ('lightningrl', 'grpo', 'grpo_traj'), got 'bogus'"),
  ("--config.data.train=data/missing.json", "error: config.data.train: data/missing.json: file not found"),
  ("--config.model.checkpoint=/nonexistent", "error: config.model.checkpoint: /nonexistent: directory not found"),
]


@pytest.mark.parametrize("program", [train, sft])
@pytest.mark.parametrize("flag, line", TABLE, ids=[f for f, _ in TABLE])
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, capsys, program, flag, line):
  workdir = tmp_path / "w"
  assert program.main([CONFIG, f"--workdir={workdir}", flag]) == 2
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(line) and captured.out == "", lines
  assert not workdir.exists()


def test_workdir_that_is_a_file(tmp_path, capsys):
  path = tmp_path / "w"
  path.write_text("x")
  assert train.main([CONFIG, f"--workdir={path}"]) == 2
  assert capsys.readouterr().err == f"error: --workdir: {path}: exists and is not a directory\n"


def test_debug_shows_the_traceback(tmp_path):
  with pytest.raises(ValueError, match="config.optim.lr"):
    train.main([CONFIG, f"--workdir={tmp_path}", "--config.optim.lr=nan", "--debug"])


def test_sft_without_warm_start_steps(tmp_path, capsys):
  assert sft.main([CONFIG, f"--workdir={tmp_path / 'w'}", "--config.warm_start.steps=0"]) == 2
  assert capsys.readouterr().err == "error: config.warm_start.steps: is 0; set the number of warm-start steps\n"
