"""Atomic writes, the one way every program writes its outputs (no JAX).

A file or directory is built under a hidden temporary name beside its target and renamed into place only when it is
complete, so a killed run, a full disk or an error never leaves a complete-looking partial output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

PARTIAL = ".partial-"  # infix of every temporary name: `.<target name>.partial-<random>`


def check_output_file(path: str | os.PathLike) -> None:
  """Raise (before any work) when `path` cannot become a file: it is a directory, or its parent is not one."""
  path = os.path.abspath(path)
  if os.path.isdir(path):
    raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", path)
  parent = os.path.dirname(path)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise NotADirectoryError(errno.ENOTDIR, "its parent is not a directory", path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
  """Yield a file opened on a temporary sibling of `path`; it replaces `path` only if the block completes."""
  path = os.path.abspath(path)
  check_output_file(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}{PARTIAL}")
  try:
    with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_file(path) as f:
    f.write(text)


def write_json(path: str | os.PathLike, obj: Any, **kwargs) -> None:
  """JSON (indent 2 unless given) written atomically."""
  kwargs.setdefault("indent", 2)
  with atomic_file(path) as f:
    json.dump(obj, f, **kwargs)
    f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
  """One JSON document per line, written atomically."""
  with atomic_file(path) as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_with(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "w") -> None:
  """Call `write(file)` on a temporary sibling of `path`, then rename it into place."""
  with atomic_file(path, mode) as f:
    write(f)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
  """Yield a temporary sibling directory that becomes `out_dir` only if the block completes."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", out_dir)
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(errno.EEXIST, "output directory exists and is not empty (pass --overwrite to replace it)",
                          out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}{PARTIAL}", dir=parent)
  try:
    yield tmp
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
