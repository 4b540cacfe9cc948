"""A quiet start (lrl_jax/console.py): entry points print nothing of JAX's plugins, XLA or transformers on a CPU host
with the `plan` extra installed, as CI has it; JAX_PLATFORMS and the user's log settings are honoured."""

import json
import os
import subprocess
import sys

import pytest

from lrl_jax import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = (["train"], ["sft"], ["eval"], ["generate"], ["convert"], ["reward"], ["plan"], ["data"], ["bench"],
                ["bench", "decode"], ["bench", "rollout"], ["bench", "train"], ["bench", "reward"])
NOISE = ("Traceback", "Jax plugin configuration error", "TPU_WORKER", "cudart_stub", "PyTorch was not found",
         "absl::InitializeLog", "InitGoogle", "Unable to initialize backend")
NOTICE = b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def user_env(tmp_path, hide_torch=False):
  """The environment a user's shell has: no JAX_PLATFORMS (the conftest sets it), this checkout first on the path;
  `hide_torch`: torch unimportable, as after `pip install -e .` alone."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL",
                                                          "TRANSFORMERS_NO_ADVISORY_WARNINGS")}
  path = [ROOT, os.environ.get("PYTHONPATH", "")]
  if hide_torch:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    path.insert(0, str(tmp_path))
  env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
  return env


def assert_quiet(stderr: str, allowed: tuple[str, ...] = ()):
  assert not [n for n in NOISE if n in stderr], stderr[-3000:]
  assert [line for line in stderr.splitlines() if line.strip() and not line.startswith(allowed)] == [], stderr[-3000:]


def test_every_entry_points_help_is_quiet(tmp_path):
  """One process runs each `--help` as `python -m lrl_jax.<name> --help` would, after the package's start-up."""
  code = ("import runpy, sys\n"
          "sys.argv, sys.orig_argv = ['-m'], [sys.executable, '-m', 'lrl_jax.generate']\n"
          "import lrl_jax\n"  # the start-up of `python -m lrl_jax.generate`, which every entry point shares
          f"for name, *args in {ENTRY_POINTS!r}:\n"
          "  sys.argv = ['lrl_jax.' + name, *args, '--help']\n"
          "  try:\n"
          "    runpy.run_module('lrl_jax.' + name, run_name='__main__', alter_sys=True)\n"
          "  except SystemExit as e:\n"
          "    assert not e.code, (name, args, e.code)\n"
          "import os\n"
          "print('jax' in sys.modules, os.environ.get('JAX_PLATFORMS', 'unset'))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=user_env(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count("usage: ") == len(ENTRY_POINTS)
  assert proc.stdout.splitlines()[-1] == f"True {'unset' if console.has_accelerator() else 'cpu'}"  # JAX was loaded
  assert_quiet(proc.stderr)


def test_generate_is_quiet_without_torch(tiny_hf_dir, tmp_path):
  """A real run: JAX starts its backends (the plugins' initialisation), transformers loads the tokenizer."""
  src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  src.write_text(json.dumps({"prompt": "What is 2+2?"}) + "\n")
  cmd = [sys.executable, "-m", "lrl_jax.generate", f"--checkpoint={tiny_hf_dir}", f"--input={src}", f"--output={out}",
         "--greedy", "--max_new_tokens=4", "--batch_size=1"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=user_env(tmp_path, hide_torch=True))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("prompts=1 tokens=") and "1/1" in proc.stderr
  assert_quiet(proc.stderr, allowed=("generate:",))  # the progress bar


@pytest.mark.parametrize("orig_argv,name", [(["py", "-m", "lrl_jax.train", "--x"], "lrl_jax.train"),
                                            (["py", "-u", "-mlrl_jax.plan"], "lrl_jax.plan"),
                                            (["py", "-m"], None)])
def test_program_module(orig_argv, name):
  assert console.program_module(["-m"], orig_argv) == name
  assert console.program_module(["/x/lrl_jax/train.py"], orig_argv) is None  # after the import: not -m's packages


@pytest.fixture
def host(tmp_path, monkeypatch):
  """A host whose device nodes are files under tmp_path (none at first); setup's import hook stays in this test."""
  monkeypatch.setattr(console, "NVIDIA_NODES", (str(tmp_path / "nvidia0"),))
  monkeypatch.setattr(console, "OTHER_ACCELERATOR_NODES", (str(tmp_path / "accel*"),))
  monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
  return tmp_path


def test_cpu_host_defaults_to_cpu_and_keeps_the_users_settings(host):
  env = {}
  console.setup(env, platform="linux")
  assert env == {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
  for users in ({"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": ""}, {"TF_CPP_MIN_LOG_LEVEL": "0"}):
    env = dict(users)
    console.setup(env, platform="linux")
    assert {k: env[k] for k in users} == users
  env = {}
  console.setup(env, platform="darwin")  # no CUDA plugin or libtpu there; Apple's plugin must stay reachable
  assert "JAX_PLATFORMS" not in env


@pytest.mark.parametrize("node", ["nvidia0", "accel0"])
def test_accelerator_host_lets_jax_choose(host, node):
  (host / node).write_text("")
  env = {}
  console.setup(env, platform="linux")
  assert "JAX_PLATFORMS" not in env and env["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_notices_are_dropped_and_everything_else_passes(capfd):
  with console.without_notices():
    os.write(2, BANNER + NOTICE + b"W1207 real warning\n" + BANNER + b"progress 1/2\rprogress 2/2")
  assert capfd.readouterr().err == "W1207 real warning\nprogress 1/2\rprogress 2/2"


def test_cuda_plugin_modules_load_without_notices(host, tmp_path, monkeypatch, capfd):
  """The hook finds the plugin's modules and drops what they print on load and in `initialize()`."""
  pkg = tmp_path / "fake_cuda_plugin"
  pkg.mkdir()
  write = "import os\nos.write(2, {!r})\n"
  (pkg / "__init__.py").write_text(write.format(BANNER + NOTICE + b"loaded\n") + "def initialize():\n  "
                                   + write.format(NOTICE + b"initialized\n").replace("\n", "\n  ") + "return 7\n")
  (pkg / "ext.py").write_text(write.format(NOTICE))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(console, "CUDA_PLUGIN_PACKAGES", ("fake_cuda_plugin",))
  monkeypatch.setattr(console, "CUDA_PJRT_PLUGINS", ("fake_cuda_plugin",))
  console.setup({}, platform="linux")
  try:
    import fake_cuda_plugin
    import fake_cuda_plugin.ext  # noqa: F401
    assert fake_cuda_plugin.initialize() == 7
    assert capfd.readouterr().err == "loaded\ninitialized\n"
  finally:
    for name in ("fake_cuda_plugin", "fake_cuda_plugin.ext"):
      sys.modules.pop(name, None)
