"""Training checkpoints with Orbax: params, optimizer state, step and RNG as arrays; data cursor and config as JSON.

Orbax writes each step to a temporary directory and renames it when complete, so a process killed at any point
leaves only whole checkpoints; resuming restores the newest one.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
  """Keep the last `keep_last` steps and every `keep_every`-th step under `workdir/checkpoints`."""

  def __init__(self, workdir: str, keep_last: int = 3, keep_every: int = 0):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep_last, keep_period=keep_every or None, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """state: a pytree of arrays (params, opt_state, rng...); meta: JSON (data cursor, config, counters)."""
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restore into `target` (abstract arrays with shardings, or concrete arrays) → (state, meta)."""
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def close(self) -> None:
    self.manager.close()
