"""A small pool of worker processes whose tasks have deadlines: a worker that overruns is killed and replaced.

Workers are plain `python -c` children speaking length-prefixed pickle over their stdin/stdout, so starting one
never re-imports the caller's main module (a JAX trainer) the way multiprocessing's spawn does. A worker imports
its preload modules before it reports ready, so no task's deadline pays for imports.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_CMD = "import sys; from lrl_jax.rewards.pool import worker_main; worker_main(sys.argv[1:])"
STARTUP_TIMEOUT_S = 120.0

Task = tuple[str, Any]  # ("module:function", argument)


def available_cpus() -> int:
  """CPUs this process may run on (affinity-aware)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


def _resolve(path: str) -> Callable[[Any], Any]:
  """`module:function` (or `module:object.method`) → the callable."""
  module, _, name = path.partition(":")
  target: Any = importlib.import_module(module)
  for part in name.split("."):
    target = getattr(target, part)
  return target


def _read_exact(fd: int, n: int) -> bytes | None:
  """Read exactly n bytes from fd, or None at end of file."""
  chunks, left = [], n
  while left:
    chunk = os.read(fd, left)
    if not chunk:
      return None
    chunks.append(chunk)
    left -= len(chunk)
  return b"".join(chunks)


def _send(fd: int, obj: Any) -> None:
  """Write one length-prefixed pickle frame."""
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  view = memoryview(len(data).to_bytes(8, "little") + data)
  while view:
    view = view[os.write(fd, view):]


def _recv(fd: int) -> Any:
  """Read one frame; None when the peer closed."""
  header = _read_exact(fd, 8)
  if header is None:
    return None
  body = _read_exact(fd, int.from_bytes(header, "little"))
  return None if body is None else pickle.loads(body)


def worker_main(preload: Sequence[str] = ()) -> None:
  """Worker loop: import `preload`, say ready, then run `(path, arg)` tasks until stdin closes."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  out_fd = os.dup(1)
  os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
  for module in preload:
    importlib.import_module(module)
  _send(out_fd, (True, "ready"))
  while True:
    task = _recv(0)
    if task is None:
      return
    path, arg = task
    try:
      reply = (True, _resolve(path)(arg))
    except BaseException as e:  # a failing task must not take the worker down
      reply = (False, f"{type(e).__name__}: {e}")
    _send(out_fd, reply)


class _Worker:
  """One worker process, its state (starting, idle or running a task) and the deadline of what it is doing."""

  def __init__(self, preload: Sequence[str]) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CMD, *preload], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=env, close_fds=True)
    self.ready = False
    self.task: int | None = None
    self.deadline = time.monotonic() + STARTUP_TIMEOUT_S

  @property
  def out_fd(self) -> int:
    return self.proc.stdout.fileno()

  def kill(self) -> None:
    """Stop the worker now and reap it."""
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()
    for stream in (self.proc.stdin, self.proc.stdout):
      try:
        stream.close()
      except OSError:
        pass

  def close(self, timeout_s: float = 2.0) -> None:
    """Ask the worker to exit (EOF on stdin), killing it if it does not."""
    try:
      self.proc.stdin.close()
      self.proc.wait(timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
      pass
    self.kill()


class WorkerPool:
  """`run(tasks, timeouts)` → [(ok, value_or_error)]: at most `size` tasks at a time, each under its own deadline."""

  def __init__(self, size: int | None = None, preload: Sequence[str] = (),
               on_lost: Callable[[int], None] | None = None) -> None:
    self.size = size or available_cpus()
    self.preload = tuple(preload)
    self.on_lost = on_lost  # called with the pid of a worker killed or dead mid-task, to clean up after it
    self._workers: list[_Worker] = []
    self._finalizer = weakref.finalize(self, WorkerPool._close_all, self._workers)
    atexit.register(self._finalizer)

  @staticmethod
  def _close_all(workers: list[_Worker]) -> None:
    for w in workers:
      w.close()
    workers.clear()

  def close(self) -> None:
    """Stop every worker; the pool starts workers again lazily if used afterwards."""
    self._close_all(self._workers)

  def pids(self) -> list[int]:
    """Process ids of the live workers."""
    return [w.proc.pid for w in self._workers]

  def run(self, tasks: Sequence[Task], timeouts: float | Sequence[float],
          on_done: Callable[[int, bool, Any], None] | None = None) -> list[tuple[bool, Any]]:
    """Run every task in the workers; one past its timeout yields (False, 'timeout ...') and its worker dies."""
    limits = [float(timeouts)] * len(tasks) if isinstance(timeouts, (int, float)) else [float(t) for t in timeouts]
    results: list[tuple[bool, Any] | None] = [None] * len(tasks)
    pending = deque(range(len(tasks)))

    def finish(index: int, ok: bool, value: Any) -> None:
      results[index] = (ok, value)
      if on_done is not None:
        on_done(index, ok, value)

    while pending or any(w.task is not None for w in self._workers):
      self._dispatch(tasks, limits, pending)
      watched = [w for w in self._workers if w.task is not None or not w.ready]
      wait = max(0.0, min(w.deadline for w in watched) - time.monotonic())
      ready, _, _ = select.select([w.out_fd for w in watched], [], [], wait)
      for w in watched:
        if w.out_fd in ready:
          reply, index = _recv(w.out_fd), w.task
          w.task = None
          if reply is None:
            self._replace(w)
            if index is None:
              raise RuntimeError(f"a pool worker failed to start (exit code {w.proc.returncode})")
            finish(index, False, f"worker died (exit code {w.proc.returncode})")
          elif not w.ready:
            w.ready = True
          else:
            finish(index, *reply)
        elif time.monotonic() >= w.deadline:
          self._replace(w)
          if w.task is None:
            raise RuntimeError("a pool worker did not start in time")
          finish(w.task, False, f"timeout after {limits[w.task]:.3g}s (worker killed)")
    return results  # type: ignore[return-value]

  def _dispatch(self, tasks: Sequence[Task], limits: list[float], pending: deque) -> None:
    """Give pending tasks to idle workers; start workers (up to `size`) for the rest."""
    while pending:
      idle = next((w for w in self._workers if w.ready and w.task is None), None)
      if idle is None:
        running = sum(1 for w in self._workers if w.task is not None)
        if len(self._workers) < min(self.size, len(pending) + running):
          self._workers.append(_Worker(self.preload))
          continue
        return
      index = pending.popleft()
      try:
        _send(idle.proc.stdin.fileno(), tasks[index])
      except BrokenPipeError:
        self._replace(idle)
        pending.appendleft(index)
        continue
      idle.task, idle.deadline = index, time.monotonic() + limits[index]

  def _replace(self, worker: _Worker) -> None:
    """Kill a worker and drop it (a fresh one starts when work needs it); let `on_lost` clean up after it."""
    worker.kill()
    self._workers.remove(worker)
    if self.on_lost is not None:
      self.on_lost(worker.proc.pid)
