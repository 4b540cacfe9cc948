"""A quiet start for the entry points: JAX's platform default and the third-party start-up notices.

`python -m lrl_jax.<name>` runs `setup()` from the package's `__init__`, before anything imports JAX. Without it, a
CPU host with the `plan` extra installed prints ~30 lines (two of them tracebacks) before a program's own output: JAX
initialises the CUDA plugin and libtpu, which find no device, and the CUDA plugin's libraries log that there is no
driver when they load. Only the standard library is imported here, so `--help` stays fast. Also the program's
stderr around native writers that print past a failure (`quiet_native_stderr`, used by checkpoint saves).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.machinery
import os
import sys
from collections.abc import Iterator, MutableMapping

# Device nodes of the accelerators JAX has plugins for: NVIDIA (Linux and containers; /dev/dxg: WSL2), AMD (ROCm),
# Google TPU (the accel driver up to v5p, VFIO from v5e on). Where none exists, JAX can only use the CPU.
NVIDIA_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")
OTHER_ACCELERATOR_NODES = ("/dev/kfd", "/dev/accel*", "/dev/vfio/[0-9]*")
# Defaults a user's own setting overrides: C++ logs of XLA/TSL at warning level and up (0 shows them all), and no
# transformers "advice" (its "PyTorch was not found" notice: this project needs only its tokenizers).
ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
# Python modules of the CUDA plugin whose native libraries, loaded on a host without an NVIDIA driver, log that
# there is none (`cudart_stub.cc ... Could not find cuda drivers`), each after absl's pre-initialisation banner.
CUDA_PLUGIN_PACKAGES = ("jax_cuda12_plugin", "jax_cuda13_plugin")
CUDA_PJRT_PLUGINS = ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")
NOTICE_STARTS = ("WARNING: All log messages before absl::InitializeLog()", "WARNING: Logging before InitGoogle()")
NOTICE_PARTS = ("cudart_stub.cc",)

_PROGRAM = False  # running as `python -m lrl_jax.<name>` (cli.program), not called in-process
_ERR_FD: int | None = None  # our own stderr once others' output is silenced (quiet_native_stderr)


def program_module(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str | None:
  """NAME while `python -m NAME` imports NAME's packages (Python sets sys.argv[0] to "-m" until it runs NAME)."""
  argv = sys.argv if argv is None else argv
  orig_argv = sys.orig_argv if orig_argv is None else orig_argv
  if argv[:1] != ["-m"]:
    return None
  for i, arg in enumerate(orig_argv[1:], start=1):
    if arg == "-m":
      return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
    if arg.startswith("-m"):
      return arg[2:]
  return None


def has_nvidia_gpu() -> bool:
  return any(os.path.exists(node) for node in NVIDIA_NODES)


def has_accelerator() -> bool:
  """Whether this host may have a device a JAX plugin serves (a cheap check of device nodes; loads nothing)."""
  return has_nvidia_gpu() or any(glob.glob(pattern) for pattern in OTHER_ACCELERATOR_NODES)


def setup(environ: MutableMapping[str, str] = os.environ, platform: str = sys.platform) -> None:
  """Set the start-up defaults (each only where the user has not set it) and drop the CUDA plugin's no-driver notices.

  On a Linux host without an accelerator JAX_PLATFORMS becomes "cpu", so JAX does not initialise the installed GPU and
  TPU plugins only to fail; where a device node exists JAX chooses, and a JAX_PLATFORMS the user set (even empty) stays.
  """
  for key, value in ENV_DEFAULTS.items():
    environ.setdefault(key, value)
  if platform == "linux" and "JAX_PLATFORMS" not in environ and not has_accelerator():
    environ["JAX_PLATFORMS"] = "cpu"
  if not has_nvidia_gpu() and not any(isinstance(f, _QuietCudaPlugin) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietCudaPlugin())


def is_notice(line: str) -> bool:
  return line.startswith(NOTICE_STARTS) or any(part in line for part in NOTICE_PARTS)


@contextlib.contextmanager
def without_notices() -> Iterator[None]:
  """Hold what is written to file descriptor 2 inside the block and pass it on after, less the notice lines."""
  import tempfile  # here: 10 ms of imports that `--help` of a program without JAX does not need

  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to filter
    yield
    return
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      kept = [line for line in held.read().splitlines(keepends=True) if not is_notice(line.decode(errors="replace"))]
      if kept:
        os.write(2, b"".join(kept))


class _QuietLoader:
  """A module loader that runs the wrapped one with the notices dropped; a PJRT plugin's `initialize()` too."""

  def __init__(self, loader):
    self._loader = loader

  def __getattr__(self, name):  # resource readers, get_filename, ... of the wrapped loader
    return getattr(self._loader, name)

  def create_module(self, spec):
    with without_notices():  # an extension module's library loads (and logs) here
      return self._loader.create_module(spec)

  def exec_module(self, module):
    with without_notices():
      self._loader.exec_module(module)
    if module.__name__ in CUDA_PJRT_PLUGINS and callable(getattr(module, "initialize", None)):
      module.initialize = _quiet(module.initialize)  # JAX calls it when it first needs a backend


def _quiet(fn):
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with without_notices():
      return fn(*args, **kwargs)
  return wrapped


class _QuietCudaPlugin:
  """A meta path finder: the CUDA plugin's modules as the path finder finds them, loaded through `_QuietLoader`."""

  def find_spec(self, name, path, target=None):
    if not (name in CUDA_PJRT_PLUGINS or name.split(".")[0] in CUDA_PLUGIN_PACKAGES):
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path, target)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def mark_program() -> None:
  """This process is an entry point run as `python -m lrl_jax.<name>` (cli.program), not a caller in-process."""
  global _PROGRAM
  _PROGRAM = True


def error_fd() -> int | None:
  """Our own stderr once `quiet_native_stderr` silenced fd 2 after a failure (the `error:` line goes there), or None."""
  return _ERR_FD


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
  """In a program, send stderr to /dev/null inside the block and restore it after; when the block raises, keep it
  quiet for the rest of the process (the `error:` line still reaches the user). For native writers (Orbax,
  tensorstore) whose threads print tracebacks into a closed event loop when a write fails."""
  global _ERR_FD
  if not _PROGRAM or _ERR_FD is not None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  try:
    yield
  except Exception:
    _ERR_FD = saved
    raise
  except BaseException:
    os.dup2(saved, 2)
    raise
  sys.stderr.flush()
  os.dup2(saved, 2)
  os.close(saved)
