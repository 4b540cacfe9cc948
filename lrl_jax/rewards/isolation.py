"""Kernel isolation applied in the sandbox child between fork and exec: namespaces, private mounts, rlimits, uid drop.

Everything here runs in `preexec_fn`, so it only calls into libc and the `os`/`resource` modules.
"""

from __future__ import annotations

import ctypes
import os
import resource
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
  """Raise OSError with errno when a libc call failed."""
  if result != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
  enc = (lambda s: None if s is None else s.encode())
  _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


@dataclass(frozen=True)
class Plan:
  """What the child applies: limits always; a private uid and namespaces when the machine permits them."""

  workdir: str
  cpu_s: int
  memory_bytes: int
  file_bytes: int
  max_processes: int
  max_open_files: int
  uid: int | None = None
  namespaces: bool = False
  tmpfs_mb: int = 64


def _enter_namespaces(plan: Plan) -> None:
  """New network (no interfaces but a down loopback), IPC and mount namespaces; size-limited private tmpfs for the
  work directory and every world-writable directory, so writes there never reach the host. Non-root: user+net only."""
  if os.geteuid() != 0:
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare(user, net)")
    return
  _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare(mount, net, ipc)")
  _mount(None, "/", None, MS_REC | MS_PRIVATE)
  size = f"size={plan.tmpfs_mb}m"
  for path in WORLD_WRITABLE_DIRS:
    if os.path.isdir(path) and not os.path.islink(path):
      _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=1777")
  os.makedirs(plan.workdir, exist_ok=True)
  owner = f",uid={plan.uid},gid={plan.uid}" if plan.uid is not None else ""
  _mount("tmpfs", plan.workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0700{owner}")
  os.chdir(plan.workdir)


def _set_limits(plan: Plan, nproc: int) -> None:
  """CPU seconds (SIGXCPU then SIGKILL one second later), address space, file size, processes, files, no cores."""
  resource.setrlimit(resource.RLIMIT_CPU, (plan.cpu_s, plan.cpu_s + 1))
  resource.setrlimit(resource.RLIMIT_AS, (plan.memory_bytes, plan.memory_bytes))
  resource.setrlimit(resource.RLIMIT_FSIZE, (plan.file_bytes, plan.file_bytes))
  resource.setrlimit(resource.RLIMIT_NOFILE, (plan.max_open_files, plan.max_open_files))
  resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
  resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def user_task_count(uid: int) -> int:
  """Tasks (threads included) the kernel counts against RLIMIT_NPROC for `uid`."""
  count = 0
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status", "rb") as f:
        fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
    except OSError:
      continue
    if int(fields.get(b"Uid", b"-1 ").split()[0]) == uid:
      count += int(fields.get(b"Threads", b"1").strip() or 1)
  return count


def make_preexec(plan: Plan) -> Callable[[], None]:
  """The `preexec_fn` for a plan. With a private uid the harness keeps its uid and each test child drops to the
  private one (the harness applies it); without, RLIMIT_NPROC counts the user's other tasks too, so the limit is
  raised by their current number (computed here, before the fork)."""
  nproc = plan.max_processes if plan.uid is not None else user_task_count(os.getuid()) + plan.max_processes

  def preexec() -> None:
    if plan.namespaces:
      _enter_namespaces(plan)
    _set_limits(plan, nproc)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")

  return preexec


def private_uid_range() -> tuple[int, int]:
  """A uid range unlikely to hold real users: high ids when the user namespace maps all of them."""
  try:
    with open("/proc/self/uid_map") as f:
      ranges = [tuple(map(int, line.split())) for line in f if line.strip()]
  except OSError:
    ranges = []
  if any(inside == 0 and count >= 2**32 - 1 for inside, _, count in ranges):
    return 2**30, 2**31 - 2
  inside, _, count = max(ranges, key=lambda r: r[2], default=(0, 0, 65536))
  top = inside + count - 2
  return max(top - count // 4, 1000), top


def pick_private_uid() -> int:
  """A fresh random uid for one run: its processes, files and signals are isolated from every other run."""
  low, high = private_uid_range()
  return low + secrets.randbelow(high - low)


def become_subreaper() -> None:
  """Adopt orphaned descendants (PR_SET_CHILD_SUBREAPER), so killed escapees are reaped here, not left as zombies."""
  _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")


def kill_uid(uid: int) -> bool:
  """SIGKILL every process of `uid`, however detached, from a short-lived child that takes that uid. Returns True
  when none is left: that child then probes with a fork under RLIMIT_NPROC=2, which only succeeds when it is the
  last process the kernel counts for `uid` (zombies included)."""
  pid = os.fork()
  if pid == 0:
    code = 2
    try:
      resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))
      os.setgroups([])
      os.setresgid(uid, uid, uid)
      os.setresuid(uid, uid, uid)
      try:
        os.kill(-1, signal.SIGKILL)
      except ProcessLookupError:
        pass
      try:
        probe = os.fork()
      except BlockingIOError:
        code = 1
      else:
        if probe == 0:
          os._exit(0)
        os.waitpid(probe, 0)
        code = 0
    finally:
      os._exit(code)
  _, status = os.waitpid(pid, 0)
  return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _children() -> list[int]:
  """Our child processes (adopted orphans included)."""
  try:
    pids = []
    for tid in os.listdir("/proc/self/task"):
      with open(f"/proc/self/task/{tid}/children") as f:
        pids += [int(p) for p in f.read().split()]
    return pids
  except FileNotFoundError:  # kernels without CONFIG_PROC_CHILDREN
    me, pids = os.getpid(), []
    for name in filter(str.isdigit, os.listdir("/proc")):
      try:
        with open(f"/proc/{name}/stat", "rb") as f:
          if int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
            pids.append(int(name))
      except (OSError, ValueError, IndexError):
        continue
    return pids


def reap_uid(uid: int, rounds: int = 1000) -> bool:
  """Kill every process of a run's private uid and reap the ones we adopted, until none is left (True) or
  `rounds` tries have passed (False)."""
  for _ in range(rounds):
    if kill_uid(uid):
      return True
    for pid in _children():
      try:
        if os.stat(f"/proc/{pid}").st_uid == uid:
          os.waitpid(pid, os.WNOHANG)
      except (OSError, ChildProcessError):
        continue
    time.sleep(0.001)
  return False
