"""Run planned tasks as subprocesses over core slots: one task per slot, pinned to the slot's cores.

A task whose `done` file exists is skipped; any other is (re)launched with the same command, which resumes from its
checkpoints. Each task's directory holds `.lock` (flock, inherited by the child, so a second scheduler never runs the
same task while the first one's child lives) and `run.log` (appended). Children get SIGKILL if the scheduler dies.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

from lrl_jax.experiments.plan import Task

SINGLE_CORE_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
_PR_SET_PDEATHSIG = 1


def core_slots(workers: int, cores: str = "") -> list[tuple[int, ...]]:
  """`workers` disjoint core sets over `cores` ("0,1"; "" = this process's affinity); 0 workers = one per core.

  More workers than cores share cores round-robin.
  """
  avail = sorted(int(c) for c in cores.split(",") if c) if cores else sorted(os.sched_getaffinity(0))
  workers = workers or len(avail)
  if workers <= len(avail):
    return [tuple(avail[i::workers]) for i in range(workers)]
  return [(avail[i % len(avail)],) for i in range(workers)]


def child_env(cores: tuple[int, ...], compile_cache: str = "") -> dict[str, str]:
  """The environment of a task on `cores`: single-threaded XLA CPU on one core (docs/RESULTS.md, "Scheduling"), and
  JAX's persistent compilation cache in `compile_cache` (unless the environment names one), so the runs' identical
  programs compile once."""
  env = dict(os.environ)
  if len(cores) == 1:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_CORE_XLA_FLAGS}".strip()
  if compile_cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", compile_cache)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def _pin_and_tie(cores: tuple[int, ...]) -> Callable[[], None]:
  def setup():
    os.sched_setaffinity(0, cores)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  return setup


def _try_lock(workdir: str) -> int | None:
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(os.path.join(workdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd
  except BlockingIOError:
    os.close(fd)
    return None


def _copy_warm_start(task: Task) -> None:
  """Copy the seed's warm-start model dir into the run dir (temp dir, then rename) unless it is there."""
  dst = os.path.join(task.workdir, "warmstart")
  if os.path.isdir(dst):
    return
  tmp = f"{dst}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(task.warm_dir, tmp)
  os.replace(tmp, dst)


def run(tasks: list[Task], slots: list[tuple[int, ...]], log: Callable[[str], None] = print,
        poll_s: float = 0.5, compile_cache: str = "") -> dict[str, str]:
  """Run every unfinished task (warm starts before their seed's runs); returns name -> done | failed (rc N) |
  skipped (warm start failed). Interrupting the scheduler kills its children; rerunning it resumes them."""
  status = {t.name: "done" for t in tasks if os.path.exists(t.done)}
  pending = [t for t in tasks if t.name not in status]
  running: dict[int, tuple[Task, subprocess.Popen, int, float]] = {}
  try:
    while pending or running:
      for i, (task, proc, fd, start) in list(running.items()):
        if proc.poll() is None:
          continue
        os.close(fd)
        del running[i]
        ok = proc.returncode == 0 and os.path.exists(task.done)
        status[task.name] = "done" if ok else f"failed (rc {proc.returncode})"
        log(f"{task.name}: {status[task.name]} in {time.perf_counter() - start:.0f}s")
      for i in [i for i in range(len(slots)) if i not in running]:
        task = _next_ready(pending, status)
        if task is None:
          break
        fd = _try_lock(task.workdir)
        if fd is None:
          log(f"{task.name}: running in another process; waiting")
          pending.append(pending.pop(pending.index(task)))
          time.sleep(poll_s)
          break
        pending.remove(task)
        if os.path.exists(task.done):  # finished by another scheduler meanwhile
          os.close(fd)
          status[task.name] = "done"
          continue
        running[i] = (task, _launch(task, slots[i], fd, compile_cache), fd, time.perf_counter())
        log(f"{task.name}: started on cores {','.join(map(str, slots[i]))}")
      for task in [t for t in pending if status.get(_warm_name(t)) not in (None, "done")]:
        pending.remove(task)
        status[task.name] = "skipped (warm start failed)"
      time.sleep(poll_s)
  finally:
    for task, proc, fd, _ in running.values():
      proc.kill()
      proc.wait()
      os.close(fd)
  return status


def _warm_name(task: Task) -> str:
  return f"warmstart/seed{task.seed}"


def _next_ready(pending: list[Task], status: dict[str, str]) -> Task | None:
  return next((t for t in pending if t.variant is None or status.get(_warm_name(t)) == "done"), None)


def _launch(task: Task, cores: tuple[int, ...], lock_fd: int, compile_cache: str) -> subprocess.Popen:
  if task.variant is not None:
    _copy_warm_start(task)
  logf = open(os.path.join(task.workdir, "run.log"), "a")
  logf.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} cores {cores}: {' '.join(task.argv)}\n")
  logf.flush()
  with logf:
    return subprocess.Popen(task.argv, stdout=logf, stderr=subprocess.STDOUT, env=child_env(cores, compile_cache),
                            preexec_fn=_pin_and_tie(cores), pass_fds=(lock_fd,))
