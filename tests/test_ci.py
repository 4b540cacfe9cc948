"""`.ci/run` fails when pytest fails or collects no test (exit code 5), and passes when pytest passes.

The script runs in a copy of the repo layout with stand-ins for python3/pip/pytest on PATH (no venv, no install)."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAKE_PYTHON3 = """#!/bin/sh
# stands in for `python3 -m venv .venv`: a venv whose activate puts the fake python and pip first on PATH
mkdir -p .venv/bin
printf 'PATH="%s/.venv/bin:$PATH"\\n' "$PWD" > .venv/bin/activate
printf '#!/bin/sh\\nexit 0\\n' > .venv/bin/pip
printf '#!/bin/sh\\nexit %s\\n' "$PYTEST_EXIT" > .venv/bin/python
chmod +x .venv/bin/pip .venv/bin/python
"""


@pytest.mark.parametrize("pytest_exit, ci_exit", [(0, 0), (1, 1), (5, 5)])
def test_ci_run_exit_code(tmp_path, pytest_exit, ci_exit):
  (tmp_path / ".ci").mkdir()
  shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "python3").write_text(FAKE_PYTHON3)
  (bin_dir / "python3").chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTEST_EXIT": str(pytest_exit)}
  done = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == ci_exit, done.stderr
