"""Resumption: kill the trainer (SIGKILL) at any phase, damage its newest checkpoints or fill its disk, rerun the same
command: the parameters, optimizer state and data cursor equal those of an uninterrupted run exactly, and
metrics.jsonl holds each step once."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from lrl_jax import train
from lrl_jax.run.checkpoints import Checkpoints
from tests.cli_util import our_lines
from tests.run.util import ROOT, load

ARGS = ["--config", os.path.join(ROOT, "configs/test.py"), "--config.train.steps=3", "--config.warm_start.steps=0",
        "--config.data.eval="]


def _train(workdir, *extra, preexec_fn=None):
  cmd = [sys.executable, "-m", "lrl_jax.train", *ARGS, "--workdir", str(workdir), *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, preexec_fn=preexec_fn)


def _config():
  config = load("test")
  config.train.steps, config.warm_start.steps, config.data.eval = 3, 0, ""
  return config


def _state(workdir):
  ckpt = Checkpoints(str(workdir))
  step = ckpt.latest_step()
  state, meta = ckpt.restore(step, None)
  ckpt.close()
  return step, jax.tree.map(np.asarray, state), meta


def _metric_steps(workdir):
  return [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  done = _train(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  return workdir, _state(workdir)


def _same_as(straight, workdir):
  want_step, want, want_meta = straight[1]
  step, got, meta = _state(workdir)
  assert step == want_step == 3 and meta["data_cursor"] == want_meta["data_cursor"]
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):  # params and optimizer state
    assert np.array_equal(a, b)
  assert _metric_steps(workdir) == [1, 2, 3]


def _session_starts(workdir):
  """Steps of TensorBoard's SessionLog START events (each writer's purge_step), in file order."""
  from tensorboardX.proto import event_pb2
  starts = []
  for name in sorted(os.listdir(workdir / "tensorboard")):
    data = open(workdir / "tensorboard" / name, "rb").read()
    while data:  # TFRecord: length (8 bytes), its crc (4), the event, its crc (4)
      n = int.from_bytes(data[:8], "little")
      event = event_pb2.Event.FromString(data[12:12 + n])
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        starts.append(event.step)
      data = data[16 + n:]
  return starts


@pytest.mark.slow
def test_kill_at_every_phase_then_resume(straight, tmp_path):
  """Killed after the metrics row but before the save, during a rollout, inside the save (its files being written),
  during an update and right after a save; each rerun continues, the last one finishes. TensorBoard is told to hide
  the killed runs' events past each restored step (purge_step = restored step + 1)."""
  workdir = tmp_path / "killed"
  tensorboard = "--config.logging.tensorboard=true"
  for phase in ("metrics@1", "rollout@1", "save@2", "update@2", "saved@3"):
    killed = _train(workdir, tensorboard, f"--config.debug.kill_at={phase}")
    assert killed.returncode == -signal.SIGKILL, (phase, killed.stderr[-2000:])
  resumed = _train(workdir, tensorboard)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  _same_as(straight, workdir)
  assert not [d for d in os.listdir(workdir / "checkpoints") if not d.isdigit()]  # no partial step left
  assert _session_starts(workdir) == [1, 1, 2, 2, 3, 4]


def _truncate_data(step_dir):
  files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(step_dir, "state")) for f in names]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _truncate_meta_json(step_dir):
  path = os.path.join(step_dir, "meta", "metadata")
  text = open(path).read()
  open(path, "w").write(text[:len(text) // 2])


@pytest.mark.parametrize("damage", [{3: _truncate_data, 2: _delete_metadata}, {3: _truncate_meta_json}],
                         ids=["data_truncated+METADATA_deleted", "meta_json_truncated"])
def test_damaged_newest_checkpoints_fall_back(straight, tmp_path, capsys, damage):
  workdir = tmp_path / "damaged"
  shutil.copytree(straight[0], workdir)
  for step, hurt in damage.items():
    hurt(workdir / "checkpoints" / str(step))
  train.run(_config(), str(workdir))
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("warning", "error"))]
  fallback = min(damage) - 1
  assert len(err) == 1 and err[0].startswith(f"warning: resuming from step {fallback}: newer checkpoints do not "
                                             "restore"), err
  for step in damage:
    assert f"{workdir / 'checkpoints' / str(step)}: " in err[0]
    assert (workdir / "checkpoints.broken" / str(step)).is_dir()
  _same_as(straight, workdir)


def test_no_checkpoint_restores_is_one_error(straight, tmp_path, capsys):
  workdir = tmp_path / "ruined"
  shutil.copytree(straight[0], workdir)
  for step in (1, 2, 3):
    _delete_metadata(workdir / "checkpoints" / str(step))
  assert train.main([*ARGS, f"--workdir={workdir}"]) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {workdir / 'checkpoints'}: no checkpoint restores (step 3:")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]  # nothing moved


def _file_size_limit(limit):
  def limit_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return limit_files


def test_full_disk_is_one_line_then_resume(straight, tmp_path, capsys):
  workdir = tmp_path / "full"
  failed = _train(workdir, preexec_fn=_file_size_limit(256 * 1024))  # metrics fit, a checkpoint does not
  lines = our_lines(failed.stderr)
  assert failed.returncode == 2 and len(lines) == 1, failed.stderr[-3000:]
  assert lines[0].startswith(f"error: {workdir / 'checkpoints' / '1'}: the checkpoint could not be written"), lines
  assert "File too large" in lines[0] and lines[0].endswith("last good checkpoint: none"), lines
  assert _metric_steps(workdir) == [1] and not (workdir / "final").exists()
  train.run(_config(), str(workdir))
  _same_as(straight, workdir)
