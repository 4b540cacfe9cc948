"""Kill the trainer (SIGKILL) during a rollout and during an update, rerun the same command: the parameters equal
those of an uninterrupted run with the same seed, exactly."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np

from lrl_jax.checkpoints import Checkpoints
from tests.train.util import ROOT


def _train(workdir, *extra):
  cmd = [sys.executable, "-m", "lrl_jax.train", "--config", os.path.join(ROOT, "configs/test.py"),
         "--workdir", str(workdir), "--config.train.steps=3", "--config.warm_start.steps=0",
         "--config.data.eval=", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def _final_params(workdir):
  ckpt = Checkpoints(str(workdir))
  step = ckpt.latest_step()
  state, meta = ckpt.restore(step, None)
  ckpt.close()
  return step, jax.tree.map(np.asarray, state["params"]), meta


def test_kill_during_rollout_and_update_then_resume(tmp_path):
  straight = _train(tmp_path / "straight")
  assert straight.returncode == 0, straight.stderr[-2000:]
  want_step, want, want_meta = _final_params(tmp_path / "straight")
  assert want_step == 3
  for phase in ("rollout@1", "update@2"):
    work = tmp_path / phase.replace("@", "_")
    killed = _train(work, f"--config.debug.kill_at={phase}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = _train(work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    step, got, meta = _final_params(work)
    assert step == 3 and meta["data_cursor"] == want_meta["data_cursor"]
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      assert np.array_equal(a, b)
