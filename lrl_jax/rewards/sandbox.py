"""Run untrusted Python against tests in a sandbox and return one verdict per test.

Layers (see docs/REWARDS.md): a fresh session and process group, rlimits, a scrubbed environment, closed stdin,
a temporary work directory, a wall deadline that kills the whole group; when the machine permits, a private
random uid for the test children (as root: their processes, files and signals isolated from everything else,
every leftover process killed by uid) and private network/IPC/mount namespaces. What the kernel cannot provide
is refused inside the child by an audit hook.
"""

from __future__ import annotations

import functools
import marshal
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lrl_jax.rewards.isolation import Plan, become_subreaper, make_preexec, pick_private_uid, reap_uid

HARNESS_SOURCE = Path(__file__).with_name("harness.py").read_text(encoding="utf-8")
# Runs the harness from a code object compiled once per interpreter (saves compiling it on every run).
LOADER = "import marshal,os,sys;f=int(sys.argv[1]);c=os.read(f,1<<24);os.close(f);exec(marshal.loads(c))"
_COMPILE = "import marshal,sys;sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.read(),'<harness>','exec')))"
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
PER_TEST_OVERHEAD_S = 0.3


class SandboxUnavailable(RuntimeError):
  """No sandbox configuration works on this machine (or a forced layer is not permitted)."""


@dataclass(frozen=True)
class SandboxConfig:
  """Limits per run. `namespaces`/`private_uid`: None = use when permitted (overridable by the environment
  variables LRL_SANDBOX_NAMESPACES / LRL_SANDBOX_PRIVATE_UID = 0/1); False forces the fallback."""

  memory_mb: int = 1024
  file_size_mb: int = 16
  tmpfs_mb: int = 64
  max_processes: int = 8
  max_open_files: int = 64
  startup_s: float = 3.0
  value_cap: int = 1 << 20
  namespaces: bool | None = None
  private_uid: bool | None = None
  python: str | None = None
  tmp_root: str | None = None


@dataclass(frozen=True)
class Layers:
  """The isolation mechanisms one run uses."""

  private_uid: bool
  namespaces: bool
  python: str

  def guards(self) -> tuple[str, ...]:
    """Audit-hook refusals standing in for missing kernel layers."""
    return (() if self.namespaces else ("net",)) + (() if self.private_uid else ("proc", "fs"))

  def describe(self) -> str:
    """One line naming every active mechanism."""
    parts = ["session+process-group kill", "rlimits(cpu,as,fsize,nproc,nofile,core)", "scrubbed env", "tmp workdir"]
    if self.private_uid:
      parts.append("private uid (kill-by-uid reaper)")
    if self.namespaces:
      root = os.geteuid() == 0
      parts.append("net+ipc+mount namespaces (tmpfs workdir,/tmp,/dev/shm)" if root else "user+net namespaces")
    guards = self.guards()
    if guards:
      parts.append(f"audit-hook guards({','.join(guards)})")
    return f"{'; '.join(parts)}; python {self.python}"


@dataclass(frozen=True)
class TestRun:
  """One test: status pass|value|ok|fail|timeout|crash|missing; payload = repr (value), stdout (ok) or reason."""

  status: str
  payload: bytes = b""


@dataclass(frozen=True)
class SandboxResult:
  """Per-test runs, whether the harness finished, and a run-level error (setup failure, no report)."""

  tests: tuple[TestRun, ...]
  complete: bool
  error: str | None = None


@functools.lru_cache(maxsize=None)
def compiled_harness(python: str) -> bytes:
  """The harness as a code object marshalled by `python` itself (code objects are interpreter-specific)."""
  done = subprocess.run([python, "-I", "-S", "-B", "-c", _COMPILE], input=HARNESS_SOURCE.encode(),
                        capture_output=True, check=True, timeout=60)
  return done.stdout


@functools.lru_cache(maxsize=None)
def _adopt_orphans() -> None:
  """Once per process: become a subreaper so processes that escape a run's group are reaped by `reap_uid`."""
  become_subreaper()


def _env_flag(name: str) -> bool | None:
  value = os.environ.get(name)
  return None if value is None else value.strip().lower() not in ("0", "false", "no", "off", "")


def _parse_report(data: bytes, nonce: bytes, n_tests: int) -> tuple[list[TestRun], bool]:
  """Decode the harness's `<nonce> <i> <status> <len>\\n<payload>` records; anything malformed ends parsing."""
  runs = [TestRun("missing", b"no result (the run ended early)")] * n_tests
  pos, complete = 0, False
  while pos < len(data):
    end = data.find(b"\n", pos)
    if end < 0:
      break
    fields = data[pos:end].split(b" ")
    if fields[0] != nonce:
      break
    if fields[1:] == [b"end"]:
      complete = True
      break
    try:
      index, status, size = int(fields[1]), fields[2].decode(), int(fields[3])
    except (IndexError, ValueError, UnicodeDecodeError):
      break
    if not 0 <= index < n_tests or end + 1 + size > len(data):
      break
    runs[index] = TestRun(status, data[end + 1:end + 1 + size])
    pos = end + 1 + size
  return runs, complete


def _read_report(sock: socket.socket, deadline: float, cap: int) -> bytes:
  """Read the report socket until EOF (the harness exited), the deadline, or `cap` bytes."""
  data = bytearray()
  while len(data) < cap:
    left = deadline - time.monotonic()
    if left <= 0:
      break
    sock.settimeout(left)
    try:
      chunk = sock.recv(1 << 16)
    except (TimeoutError, socket.timeout, OSError):
      break
    if not chunk:
      break
    data += chunk
  return bytes(data)


def _memfd(name: str, content: bytes = b"") -> int:
  """An anonymous in-memory file holding `content`, positioned at its start."""
  fd = os.memfd_create(name, 0)
  os.write(fd, content)
  os.lseek(fd, 0, os.SEEK_SET)
  return fd


def _read_memfd(fd: int, limit: int = 2000) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  return os.read(fd, limit).decode("utf-8", "replace").strip()


def run_tests(mode: str, code: str, tests: list, time_limit_s: float, config: SandboxConfig = SandboxConfig(),
              layers: Layers | None = None) -> SandboxResult:
  """Run `code` against `tests` in the sandbox: function mode takes [(kind, source)] with kind 'value' (an
  expression whose plain value the caller compares) or 'token' (statements that must not raise); stdio mode takes
  input bytes per test and returns each run's stdout."""
  layers = layers or detect_layers(config)
  uid = pick_private_uid() if layers.private_uid else None
  if uid is not None:
    _adopt_orphans()
  workdir = tempfile.mkdtemp(prefix=f"lrl-sbx-{os.getpid()}-{uid or 0}-", dir=config.tmp_root)
  fds: list[int] = []
  proc = None
  report_parent, report_child = socket.socketpair()
  try:
    if uid is not None:
      os.chown(workdir, uid, uid)
    job = {"mode": mode, "code": code, "tests": list(tests), "limit": float(time_limit_s),
           "guards": list(layers.guards()), "value_cap": config.value_cap, "uid": uid,
           "output_cap": config.file_size_mb << 20}
    nonce = secrets.token_hex(16).encode()
    code_fd = _memfd("lrl-harness", compiled_harness(layers.python))
    job_fd, err_fd = _memfd("lrl-job", marshal.dumps(job, 4)), _memfd("lrl-err")
    nonce_r, nonce_w = os.pipe()
    fds += [code_fd, job_fd, err_fd, nonce_r]
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    plan = Plan(workdir, cpu_s=math.ceil(time_limit_s) + 1, memory_bytes=config.memory_mb << 20,
                file_bytes=config.file_size_mb << 20, max_processes=config.max_processes,
                max_open_files=config.max_open_files, uid=uid, namespaces=layers.namespaces,
                tmpfs_mb=config.tmpfs_mb)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
           "MALLOC_ARENA_MAX": "2"}
    argv = [layers.python, "-I", "-S", "-B", "-c", LOADER, str(code_fd), str(job_fd), str(nonce_r),
            str(report_child.fileno())]
    deadline = time.monotonic() + config.startup_s + len(tests) * (time_limit_s + PER_TEST_OVERHEAD_S)
    try:
      proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err_fd, pass_fds=(code_fd, job_fd, nonce_r, report_child.fileno()),
                              preexec_fn=make_preexec(plan), start_new_session=True)
    except (OSError, subprocess.SubprocessError) as e:
      return SandboxResult(tuple(TestRun("missing", b"sandbox setup failed") for _ in tests), False,
                           f"sandbox setup failed: {e}")
    report_child.close()
    cap = len(tests) * (max(config.value_cap, config.file_size_mb << 20) + 4096) + 4096
    data = _read_report(report_parent, deadline, cap)
    runs, complete = _parse_report(data, nonce, len(tests))
    error = None
    if not complete:
      try:
        proc.wait(timeout=0.05)
      except subprocess.TimeoutExpired:
        pass
      code_text = "still running at the deadline" if proc.returncode is None else f"exit code {proc.returncode}"
      error = f"harness did not finish ({code_text}); stderr: {_read_memfd(err_fd)[-500:] or '-'}"
    return SandboxResult(tuple(runs), complete, error)
  finally:
    _cleanup(proc, uid, workdir, fds, (report_parent, report_child))


def _cleanup(proc: subprocess.Popen | None, uid: int | None, workdir: str, fds: list[int],
             socks: tuple[socket.socket, ...]) -> None:
  """Kill the run's process group and (private uid) every process of its uid; remove its files."""
  if proc is not None:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
      pass
    proc.wait()
  if uid is not None:
    reap_uid(uid)
  for fd in fds:
    os.close(fd)
  for sock in socks:
    sock.close()
  shutil.rmtree(workdir, ignore_errors=True)


def cleanup_after_process(pid: int, tmp_root: str | None = None) -> None:
  """After a judge worker died mid-run: kill what its runs left under their private uids and remove their work
  directories (both are named `lrl-sbx-<worker pid>-<uid>-*`). Runs the killing in a fresh interpreter, so it is
  safe to call from a large multi-threaded process."""
  for path in Path(tmp_root or tempfile.gettempdir()).glob(f"lrl-sbx-{pid}-*"):
    uid = int(path.name.split("-")[3])
    if uid and os.geteuid() == 0:
      subprocess.run([sys.executable, "-c", f"from lrl_jax.rewards.isolation import reap_uid; reap_uid({uid})"],
                     timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    shutil.rmtree(path, ignore_errors=True)


def _pythons(private_uid: bool, forced: str | None) -> list[str]:
  """Interpreters to try: the forced one, else ours, then system ones an unprivileged uid can usually execute."""
  if forced:
    return [forced]
  candidates = [sys.executable] + ([p for p in FALLBACK_PYTHONS if os.path.exists(p)] if private_uid else [])
  return list(dict.fromkeys(candidates))


def _probe(layers: Layers, config: SandboxConfig) -> str | None:
  """None when a trivial job passes under `layers`, else why not. It imports a pure-Python stdlib module the harness
  never loads, so the interpreter's library must be readable by the test children (e.g. under a private uid)."""
  result = run_tests("function", "import heapq\nx = heapq.nsmallest(1, [41, 43])[0]", [("value", "x + 1")], 2.0,
                     config, layers)
  if result.tests[0] == TestRun("value", b"42"):
    return None
  return result.error or f"unexpected probe result {result.tests[0]}"


@functools.lru_cache(maxsize=None)
def _detect(namespaces: bool | None, private_uid: bool | None, python: str | None,
            config: SandboxConfig) -> Layers:
  uid_options = [private_uid] if private_uid is not None else ([True, False] if os.geteuid() == 0 else [False])
  ns_options = [namespaces] if namespaces is not None else [True, False]
  failures = []
  for use_uid in uid_options:
    for use_ns in ns_options:
      for interpreter in _pythons(use_uid, python):
        layers = Layers(use_uid, use_ns, interpreter)
        why = _probe(layers, config)
        if why is None:
          return layers
        failures.append(f"{layers.describe()}: {why}")
  raise SandboxUnavailable("no sandbox configuration works here:\n  " + "\n  ".join(failures))


def active_layers(config: SandboxConfig | None = None) -> str:
  """A line describing the layers runs use here (callable in a judge worker)."""
  return detect_layers(config or SandboxConfig()).describe()


def detect_layers(config: SandboxConfig = SandboxConfig()) -> Layers:
  """The strongest permitted layers (cached per process); explicit settings and env flags are honoured, not relaxed."""
  namespaces = config.namespaces if config.namespaces is not None else _env_flag("LRL_SANDBOX_NAMESPACES")
  private_uid = config.private_uid if config.private_uid is not None else _env_flag("LRL_SANDBOX_PRIVATE_UID")
  return _detect(namespaces, private_uid, config.python, config)
