"""Sandbox harness, run inside the sandbox by `python -I -S -B -c <loader> ... JOB_FD NONCE_FD REPORT_FD`.

The harness never runs, compiles or parses untrusted code: each test runs in a forked child, which takes the run's
private uid when the judge gave one (the harness keeps the judge's uid, so user code can neither signal nor inspect
it) and is killed with its process group at the per-test limit. Children close the report socket before user code
starts; a function-mode verdict (a pass, or the value of the tested expression for the judge to compare) carries a
per-test token that only the harness code path writes. In the child, everything the harness uses after user code
ran is bound before it runs, so patching `__main__`, `builtins` or the stdlib modules a test uses changes nothing the
test sees; results of the solution's callables must be plain values, so forged dunders never reach a test.
"""

import builtins
import cmath
import io
import marshal
import math
import operator
import os
import select
import signal
import stat
import sys
import time
import types

_PLAIN = (int, float, complex, bool, str, bytes, type(None))
_CONTAINERS = (list, tuple, set, frozenset, dict)
_PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
                "shutil.rmtree", "os.rename", "os.replace", "os.link", "os.symlink"}
_PROC_EVENTS = {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen",
                "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata"}
_PROC_MODULES = {"_posixsubprocess", "_ctypes", "ctypes", "multiprocessing"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_TEST_MODULES = (math, cmath, operator)  # restored from a snapshot before each function-mode test runs
_INTROSPECTION = {"gc.get_objects", "gc.get_referrers", "gc.get_referents"}
_FROZEN_ATTRS = {"__code__", "__defaults__", "__kwdefaults__"}


def _read_fd(fd):
  """Everything until EOF, then close the descriptor."""
  chunks = []
  while True:
    chunk = os.read(fd, 1 << 16)
    if not chunk:
      break
    chunks.append(chunk)
  os.close(fd)
  return b"".join(chunks)


def _write_all(fd, data, write=os.write):
  """Write every byte (through `write`, captured before untrusted code could replace `os.write`)."""
  view = memoryview(data)
  while view:
    view = view[write(fd, view):]


def _exit_builtin(code=None):
  """`exit()`/`quit()` as `site` would provide them (the sandbox runs with -S)."""
  raise SystemExit(code)


def _describe(exc):
  """A short, never-raising description of an exception raised by untrusted code."""
  try:
    text = f"{type(exc).__name__}: {exc}"
  except BaseException:
    text = "exception with an unprintable message"
  return text[:300].encode("utf-8", "replace")


def _is_plain(value, _type=type, _id=id, _set=set, _plain=_PLAIN, _containers=_CONTAINERS):
  """True when value is built only from exact builtin scalar and container types (no custom __eq__/__repr__).

  Builtins are bound at definition, so user code that replaces `builtins.type` changes nothing here.
  """
  stack, seen, budget = [value], _set(), 1_000_000
  while stack:
    item = stack.pop()
    budget -= 1
    kind = _type(item)
    if budget < 0 or (kind not in _plain and kind not in _containers):
      return False
    if kind in _containers and _id(item) not in seen:
      seen.add(_id(item))
      stack.extend(item.keys() if kind is dict else item)
      if kind is dict:
        stack.extend(item.values())
  return True


def _strict_eq(left, right, _is_plain=_is_plain):
  """`==` for token tests: only plain values compare, so objects with a forged __eq__ cannot pass."""
  return _is_plain(left) and _is_plain(right) and left == right


def _strict_truth(value, _is_plain=_is_plain, _bool=bool):
  """Truthiness for token tests: only plain values count, so objects with a forged __bool__ cannot pass."""
  return _is_plain(value) and _bool(value)


def _plain_results(fn, _is_plain=_is_plain, _type=type):
  """`fn` whose every result must be a plain value: an object with forged arithmetic or comparison dunders
  (`__sub__`, `__abs__`, `__lt__`, `__float__`...) is refused where the test receives it."""

  def call(*args, **kwargs):
    value = fn(*args, **kwargs)
    if not _is_plain(value):
      raise TypeError(f"the solution returned a {_type(value).__name__}, not a plain builtin value")
    return value

  return call


def _test_namespace(space, pristine, _type=type, _callable=callable, _module=types.ModuleType,
                    _plain_results=_plain_results, _strict_eq=_strict_eq, _strict_truth=_strict_truth):
  """The globals a test runs in: the solution's names except those shadowing a builtin (the test's `abs` is the
  real one), each callable of the solution wrapped by `_plain_results`, the pristine builtins and strict helpers."""
  out = {}
  for name, value in space.items():
    if name in pristine:
      continue
    out[name] = _plain_results(value) if _callable(value) and _type(value) is not _module else value
  out["__builtins__"] = pristine
  out["__lrl_eq__"] = _strict_eq
  out["__lrl_truth__"] = _strict_truth
  return out


def _restore_modules(snapshots, modules):
  """Put back the harness's copies of the modules a test may import (undoing a solution's patches)."""
  for module, saved in snapshots:
    module.__dict__.clear()
    module.__dict__.update(saved)
    modules[saved["__name__"]] = module


def _install_integrity_hook(_frozen=_FROZEN_ATTRS, _introspection=_INTROSPECTION, _function=types.FunctionType,
                            _type=type):
  """Refuse heap walks (`gc.get_objects`...) and swapping a function's code or defaults, so user code cannot reach
  or rewrite the harness functions that run after it (frames stay readable: the stdlib needs `sys._getframe`)."""

  def hook(event, args):
    if event in _introspection:
      raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "object.__setattr__" and _type(args[0]) is _function and args[1] in _frozen:
      raise PermissionError("sandbox: replacing a function's code or defaults is not allowed")

  sys.addaudithook(hook)


def _install_guards(guards, workdir):
  """Audit-hook refusals for what the kernel layers could not provide on this machine."""
  if not guards:
    return
  own_pid = os.getpid()
  allowed = (workdir.rstrip("/") + "/", "/dev/null")
  realpath, fsdecode = os.path.realpath, os.fsdecode  # bound now: user code may replace the module attributes

  def outside(path):
    if isinstance(path, int) or path is None:
      return False
    real = realpath(fsdecode(path))
    return not (real + "/").startswith(allowed[0]) and real != allowed[1]

  def hook(event, args):
    if "net" in guards and event == "socket.__new__":
      raise PermissionError("sandbox: network access is disabled")
    if "proc" in guards:
      if event in _PROC_EVENTS or (event == "os.kill" and args[0] != own_pid):
        raise PermissionError(f"sandbox: {event} is not allowed")
      if event == "import" and args[0] in _PROC_MODULES:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if "fs" in guards:
      if event == "open":
        path, mode, flags = args
        if isinstance(path, (str, bytes)):
          parts = realpath(fsdecode(path)).split("/")
          if parts[1:2] == ["proc"] and len(parts) > 2 and parts[2].isdigit() and int(parts[2]) != own_pid:
            raise PermissionError("sandbox: other processes are not readable")
        writing = (flags or 0) & _WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
        if writing and outside(path):
          raise PermissionError("sandbox: writing outside the work directory is not allowed")
      elif event in _PATH_EVENTS and any(outside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        raise PermissionError(f"sandbox: {event} outside the work directory is not allowed")

  sys.addaudithook(hook)


def _enter_child(job, w, report_fd, devnull):
  """First steps of a test child, before any untrusted byte is touched: leave the report socket, take the run's
  private uid (the harness stays root, out of reach of user code), silence stdio, install the guards."""
  os.close(report_fd)
  uid = job["uid"]
  if uid is not None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
  os.dup2(devnull, 0)
  os.dup2(devnull, 1)
  os.dup2(devnull, 2)
  _install_guards(job["guards"], os.getcwd())


def _function_child(job, kind, source, token, w, pristine, snapshots, _compile=compile, _exec=exec, _eval=eval,
                    _repr=repr, _type=type, _is_plain=_is_plain, _describe=_describe, _write_all=_write_all,
                    _test_namespace=_test_namespace, _restore_modules=_restore_modules, _modules=sys.modules,
                    _digits=getattr(sys, "set_int_max_str_digits", None), _builtins=builtins):
  """Run the solution and one test; write P+token (passed), V+token+repr (value to compare) or F+reason, then exit.

  Every name used after the solution runs is a local bound before it (the defaults above), not a global.
  """
  write, leave = os.write, os._exit
  message = b"F" + b"no verdict"
  try:
    try:
      code = _compile(job["code"], "<solution>", "exec", dont_inherit=True, optimize=0)
    except BaseException as exc:
      raise SyntaxError(f"does not compile: {_describe(exc).decode()}") from None
    space = {"__name__": "__solution__", "__builtins__": _builtins}
    _exec(code, space)
    test_space = _test_namespace(space, pristine)
    _restore_modules(snapshots, _modules)
    if kind == "value":
      value = _eval(_compile(source, "<test>", "eval", dont_inherit=True, optimize=0), test_space)
      if _is_plain(value):
        if _digits is not None:
          _digits(0)
        message = b"V" + token + _repr(value).encode("utf-8", "surrogatepass")
      else:
        message = b"F" + f"result ({_type(value).__name__}) is not a plain value or is too large".encode()
    else:
      _exec(_compile(source, "<test>", "exec", dont_inherit=True, optimize=0), test_space)
      message = b"P" + token
  except BaseException as exc:
    message = b"F" + _describe(exc)
  try:
    _write_all(w, message, write)
  finally:
    leave(0)


def _stdio_child(job, index, w):
  """Run the program as a script on in_<index>, stdout to out_<index>; write F+reason on failure, then exit."""
  write, leave = os.write, os._exit
  status = b"O"
  try:
    os.dup2(os.open(f"in_{index}", os.O_RDONLY), 0)
    os.dup2(os.open(f"out_{index}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
    out = io.open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stdin = sys.__stdin__ = io.open(0, "r", encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = sys.__stdout__ = out
    try:
      code = compile(job["code"], "<solution>", "exec", dont_inherit=True, optimize=0)
    except BaseException as exc:
      raise SyntaxError(f"does not compile: {_describe(exc).decode()}") from None
    try:
      exec(code, {"__name__": "__main__", "__builtins__": builtins})
      threading = sys.modules.get("threading")
      if threading is not None:
        for thread in threading.enumerate():
          if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    except SystemExit as exc:
      if exc.code not in (None, 0):
        status = b"F" + f"exit code {exc.code!r}".encode()[:200]
    out.flush()
  except BaseException as exc:
    status = b"F" + _describe(exc)
  try:
    _write_all(w, status, write)
  finally:
    leave(0)


def _collect(fd, limit, cap):
  """Read a child's verdict pipe until EOF or the deadline; returns (data, timed_out)."""
  deadline = time.monotonic() + limit
  data = bytearray()
  while True:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
      os.close(fd)
      return bytes(data), True
    chunk = os.read(fd, 1 << 16)
    if not chunk:
      os.close(fd)
      return bytes(data), False
    if len(data) < cap:
      data += chunk[:cap - len(data)]


def _fork_test(run_child, limit, cap):
  """Fork a child in its own process group, collect its verdict, kill its group; (data, timed_out, wait status)."""
  r, w = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(r)
    try:
      os.setpgid(0, 0)
    except OSError:
      pass
    run_child(w)
  os.close(w)
  try:
    os.setpgid(pid, pid)
  except OSError:
    pass
  data, timed_out = _collect(r, limit, cap)
  try:
    os.killpg(pid, signal.SIGKILL)
  except OSError:
    pass
  _, status = os.waitpid(pid, 0)
  return data, timed_out, status


def _ended(status):
  """How a child that wrote no verdict ended."""
  if os.WIFSIGNALED(status):
    return f"crashed (signal {os.WTERMSIG(status)})"
  return f"exited with code {os.WEXITSTATUS(status)} before the test finished"


def _judge_function_test(job, index, test, enter, pristine, snapshots):
  """Fork one function-mode test; (status, payload) for the report."""
  kind, source = test
  token = os.urandom(16).hex().encode()

  def child(w):
    enter(w)
    _install_integrity_hook()
    _function_child(job, kind, source, token, w, pristine, snapshots)

  data, timed_out, status = _fork_test(child, job["limit"], job["value_cap"] + 96)
  if kind == "token" and data == b"P" + token:
    return b"pass", b""
  if kind == "value" and data.startswith(b"V" + token):
    return b"value", data[1 + len(token):]
  if data[:1] == b"F":
    return b"fail", data[1:]
  if data:
    return b"fail", b"no verdict from the harness (the program wrote to its verdict channel)"
  return (b"timeout", b"time limit") if timed_out else (b"crash", _ended(status).encode())


def _write_inputs(tests):
  """Create every stdin file before any user code runs (exclusive, no symlinks followed), readable by the uid."""
  for index, data in enumerate(tests):
    fd = os.open(f"in_{index}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    _write_all(fd, data)
    os.close(fd)


def _read_output(index, cap):
  """A test's stdout file, refusing anything but a regular file (user code owns the directory)."""
  try:
    fd = os.open(f"out_{index}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
  except OSError:
    return b""
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      return b""
    chunks, left = [], cap
    while left > 0:
      chunk = os.read(fd, min(left, 1 << 20))
      if not chunk:
        break
      chunks.append(chunk)
      left -= len(chunk)
    return b"".join(chunks)
  finally:
    os.close(fd)


def _judge_stdio_test(job, index, enter):
  """Fork one stdio test on its input; (status, payload = its stdout) for the report."""

  def child(w):
    enter(w)
    _stdio_child(job, index, w)

  data, timed_out, status = _fork_test(child, job["limit"], 512)
  ended_ok = not timed_out and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
  if data[:1] == b"O" or (not data and ended_ok):
    return b"ok", _read_output(index, job["output_cap"])
  if data[:1] == b"F":
    return b"fail", data[1:]
  return (b"timeout", b"time limit") if timed_out else (b"crash", _ended(status).encode())


def main():
  """Read the job and the nonce, run every test in its own child, report each outcome, then `end`."""
  job_fd, nonce_fd, report_fd = (int(a) for a in sys.argv[-3:])
  job = marshal.loads(_read_fd(job_fd))
  nonce = _read_fd(nonce_fd)
  builtins.exit = builtins.quit = _exit_builtin
  pristine = dict(builtins.__dict__)
  snapshots = [(module, dict(module.__dict__)) for module in _TEST_MODULES]
  devnull = os.open(os.devnull, os.O_RDWR)

  def enter(w):
    _enter_child(job, w, report_fd, devnull)

  if job["mode"] == "stdio":
    _write_inputs(job["tests"])
  for index, test in enumerate(job["tests"]):
    if job["mode"] == "function":
      status, payload = _judge_function_test(job, index, test, enter, pristine, snapshots)
    else:
      status, payload = _judge_stdio_test(job, index, enter)
    _write_all(report_fd, b"%s %d %s %d\n" % (nonce, index, status, len(payload)) + payload)
  _write_all(report_fd, nonce + b" end\n")


main()
os._exit(0)
