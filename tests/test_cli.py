"""The shared CLI convention (flags, config files, one error line, --debug) and the atomic-write helper."""

import errno
import os

import pytest
from absl import flags
from ml_collections import config_flags

from lrl_jax import cli, files
from lrl_jax.errors import UserError
from tests.run.util import ROOT

CONFIG = os.path.join(ROOT, "configs", "test.py")


def _define(fv):
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True)
  flags.DEFINE_integer("n", 1, "a number", flag_values=fv)
  flags.DEFINE_string("out", None, "a path", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)


def _run(argv, body=lambda fv: 0):
  return cli.run(_define, body, argv, "prog", "doc", config_flags=("config",))


@pytest.mark.parametrize("argv, line", [
  (["--out=x", "--n=two"], "error: --n: 'two' is not an integer"),
  (["--out=x", "--m=2"], "error: --m: unknown flag"),
  (["--n=2"], "error: --out: required"),
  (["--out=x", "stray"], "error: stray: unexpected argument (flags are --name=value)"),
  (["--out=x", "--config=nope/c.py"], "error: nope/c.py: config file not found (--config)"),
  (["--out=x", f"--config={CONFIG}", "--config.optim.lrr=1"], f"error: config.optim.lrr: unknown config key in "
   f"{CONFIG} (did you mean 'optim.lr'?)"),
  (["--out=x", f"--config={CONFIG}", "--config.optim.lr=fast"], "error: config.optim.lr: 'fast' is not a number"),
  (["--out=x", f"--config={CONFIG}", "--config.train.steps=1e3"],
   "error: config.train.steps: '1e3' is not an integer"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, line):
  assert _run(argv) == 2
  assert capsys.readouterr().err.splitlines() == [line]


def test_a_config_file_that_raises_is_a_user_error(tmp_path, capsys):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config():\n  raise RuntimeError('boom')\n")
  assert _run(["--out=x", f"--config={bad}"]) == 2
  assert capsys.readouterr().err == f"error: {bad}: loading the config failed: RuntimeError: boom\n"


def test_user_errors_print_one_line_bugs_raise_debug_shows_traceback(capsys):
  def user(fv):
    raise UserError("config.x: is bad\nreally")

  assert _run(["--out=x"], user) == 2
  assert capsys.readouterr().err == "error: config.x: is bad really\n"
  with pytest.raises(UserError):
    _run(["--out=x", "--debug"], user)

  def bug(fv):
    raise KeyError("a bug")

  with pytest.raises(KeyError):
    _run(["--out=x"], bug)


def test_environment_errors_are_user_errors(capsys):
  def full(fv):
    raise OSError(errno.ENOSPC, "No space left on device", "/w/checkpoints/3")

  assert _run(["--out=x"], full) == 2
  assert capsys.readouterr().err == "error: /w/checkpoints/3: No space left on device\n"
  assert not cli.is_user_error(OSError(errno.EBADF, "Bad file descriptor"))  # a bug, not the user's


def test_flags_reach_the_body_and_help_exits_0(capsys):
  seen = {}
  assert _run(["--out=o", "--n=3", f"--config={CONFIG}", "--config.train.steps=7"],
              lambda fv: seen.update(n=fv.n, steps=fv.config.train.steps)) == 0
  assert seen == {"n": 3, "steps": 7}
  assert _run(["--help"]) == 0 and "--n: a number" in capsys.readouterr().out


def test_atomic_file_replaces_only_when_complete(tmp_path):
  path = tmp_path / "out.json"
  files.write_json(path, {"a": 1})
  with pytest.raises(RuntimeError):
    with files.atomic_file(path) as f:
      f.write("partial")
      raise RuntimeError("killed")
  assert path.read_text() == '{\n  "a": 1\n}\n' and sorted(os.listdir(tmp_path)) == ["out.json"]
  with pytest.raises(IsADirectoryError):
    files.write_text(tmp_path, "x")


def test_atomic_dir(tmp_path):
  out = tmp_path / "model"
  with pytest.raises(ValueError):
    with files.atomic_dir(out) as tmp:
      open(os.path.join(tmp, "params"), "w").close()
      raise ValueError("failed half way")
  assert os.listdir(tmp_path) == []
  with files.atomic_dir(out) as tmp:
    open(os.path.join(tmp, "params"), "w").close()
  assert os.listdir(out) == ["params"]
  with pytest.raises(FileExistsError, match="not empty"):
    with files.atomic_dir(out):
      pass
