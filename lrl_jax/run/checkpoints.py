"""The training side of a run directory (layout: lrl_jax/weights/run_dir.py): Orbax checkpoints of the state, and
the policy written as W/final or an HF export from sharded arrays, never gathered.

Orbax writes each step under a temporary name and renames it when complete, so a killed save leaves no step; a step
damaged afterwards is skipped on resume (`restore_newest`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp

from lrl_jax.console import quiet_native_stderr
from lrl_jax.files import PARTIAL, atomic_dir
from lrl_jax.parallel import multihost
from lrl_jax.weights.run_dir import BROKEN_DIR, CHECKPOINTS_DIR, CheckpointError, reason, warn_stderr


class Checkpoints:
  """Keep the last `keep_last` steps and every `keep_every`-th step under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep_last: int = 3, keep_every: int = 0):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINTS_DIR)
    self.keep_last, self.keep_every = keep_last, keep_every
    self.manager, self._closed = self._manager(), False

  def _manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self.keep_last, keep_period=self.keep_every or None,
                                           create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict, during: Callable[[], None] | None = None) -> None:
    """state: a pytree of arrays (params, opt_state...); meta: JSON. `during()` runs while the files are written
    (fault injection); the save has committed when this returns."""
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.CRITICAL)  # Orbax logs a failed write from each of its threads; we report it once
    try:
      with quiet_native_stderr():
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))
        if during is not None:
          during()
        self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- a full disk or lost mount surfaces as many kinds of error
      older = [s for s in self.steps() if s < step]
      self._closed = True  # closing now would close Orbax's event loop under its failed writers
      raise CheckpointError(f"{self.step_dir(step)}: the checkpoint could not be written ({reason(e)}); last good "
                            f"checkpoint: {self.step_dir(older[-1]) if older else 'none'}") from e
    finally:
      absl_log.setLevel(level)

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restore into `target` (abstract arrays with shardings, or concrete arrays) → (state, meta)."""
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_newest(self, target: Any, check: Callable[[dict], None] = lambda meta: None,
                     warn: Callable[[str], None] | None = None) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest step that restores and whose meta passes `check`; None without steps.

    Steps that fail are moved to `checkpoints.broken/` once an older step restores (so the run continues from there
    and can save those step numbers again) and named in one line (`warn`, default stderr). When no step restores
    nothing is moved and CheckpointError names each step's failure.
    """
    warn = warn or warn_stderr
    failed: list[tuple[int, str]] = []
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore(step, target)
        check(meta)
      except Exception as e:  # noqa: BLE001 -- any failure to read a step means: try the one before
        failed.append((step, reason(e)))
        continue
      if failed:
        for bad, _ in failed:
          self._set_aside(bad)
        self.manager.close()
        self.manager = self._manager()
        detail = "; ".join(f"{self.step_dir(s)}: {r}" for s, r in failed)
        warn(f"warning: resuming from step {step}: newer checkpoints do not restore and were moved to "
             f"{os.path.join(self.workdir, BROKEN_DIR)} ({detail})")
      return step, state, meta
    if failed:
      detail = "; ".join(f"step {s}: {r}" for s, r in failed)
      raise CheckpointError(f"{self.directory}: no checkpoint restores ({detail}); move the directory away to "
                            "start over")
    return None

  def _set_aside(self, step: int) -> None:
    broken = os.path.join(self.workdir, BROKEN_DIR)
    os.makedirs(broken, exist_ok=True)
    target, n = os.path.join(broken, str(step)), 1
    while os.path.exists(target):
      target, n = os.path.join(broken, f"{step}.{n}"), n + 1
    shutil.move(self.step_dir(step), target)

  def close(self) -> None:
    if not self._closed:
      self.manager.close()
      self._closed = True


def write_final_dir(params: Any, out_dir: str, src_dir: str) -> None:
  """An Orbax model dir of sharded `params`, written by every process together (each its own shards: no process
  or device holds a gathered copy). Process 0 adds the side files of `src_dir` and moves the finished dir into
  place, so a failed write never leaves a complete-looking `out_dir`."""
  from lrl_jax.weights.checkpoint import PARAMS_DIR, save_orbax_params, write_side_files
  out_dir = os.path.abspath(out_dir)
  tmp = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}{PARTIAL}")
  if multihost.is_main():
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  multihost.barrier("final_begin")
  save_orbax_params(params, os.path.join(tmp, PARAMS_DIR), collective=True)
  if multihost.is_main():
    write_side_files(tmp, src_dir)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  multihost.barrier("final_end")


def export_hf_dir(params: Any, cfg, out_dir: str, src_dir: str) -> None:
  """An HF model dir of sharded `params`, streamed one layer tensor (or row block) at a time: every process takes
  part in each piece's gather, process 0 writes it (so host and device memory hold one piece, never the model)."""
  from lrl_jax.weights import hf
  from lrl_jax.weights.checkpoint import write_side_files
  pieces = multihost.host_slices(params)
  if multihost.is_main():
    with atomic_dir(out_dir, overwrite=True) as tmp:
      hf.write_hf_params(pieces, cfg, tmp)
      write_side_files(tmp, src_dir, cfg)
  else:
    hf.drain_hf_blocks(pieces, cfg)
  multihost.barrier("export_end")
