"""A training run directory read as a model: its layout, its newest checkpoint's params and its saved config.

A run directory W holds `checkpoints/<step>/` (params, optimizer state: `state`; step, data cursor, config: `meta`),
`model_files/` (config.json, tokenizer, generation_config.json: the model without weights) and, once the run ends,
`final/` (an Orbax model dir of the final policy). `generate`, `eval`, `convert` and a training config's
`model.checkpoint` accept W itself; the training side that writes it is `lrl_jax/run/checkpoints.py`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

from lrl_jax.errors import UserError, is_user_error

CHECKPOINTS_DIR, MODEL_FILES_DIR, FINAL_DIR, BROKEN_DIR = "checkpoints", "model_files", "final", "checkpoints.broken"


class CheckpointError(UserError):
  """No checkpoint of a run directory restores; the message names the directory and why each step failed."""


def reason(e: BaseException) -> str:
  """`Type: message` on one line; a long message keeps its start and its end (where the OS error usually is)."""
  text = " ".join(str(e).split()) or type(e).__name__
  return f"{type(e).__name__}: {text if len(text) <= 400 else text[:200] + ' ... ' + text[-200:]}"


def warn_stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def is_run_dir(path: str) -> bool:
  """A training run directory: checkpoints and the model files saved beside them."""
  return os.path.isdir(os.path.join(path, CHECKPOINTS_DIR)) and os.path.isdir(os.path.join(path, MODEL_FILES_DIR))


def model_files_dir(path: str) -> str:
  """Where the config.json and tokenizer of a model dir or run dir live."""
  return os.path.join(path, MODEL_FILES_DIR) if is_run_dir(path) else path


def run_params(run_dir: str, dtype=None, warn: Callable[[str], None] | None = None) -> tuple[int, Any]:
  """(step, params) of the newest checkpoint of a run dir that restores, on the default device, cast to dtype.

  Only the params are read (not the optimizer state). A damaged step is skipped with a one-line warning.
  """
  warn = warn or warn_stderr
  directory = os.path.join(run_dir, CHECKPOINTS_DIR)
  steps = sorted((int(d) for d in os.listdir(directory) if d.isdigit()), reverse=True)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  failed = []
  for step in steps:
    path = os.path.join(directory, str(step), "state")
    try:
      tree = ocp.PyTreeCheckpointer().metadata(path).item_metadata.tree["params"]
      item = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, dtype or m.dtype), tree)
      args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(dtype=s.dtype, sharding=device), item)
      out = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
          item={"params": item}, restore_args={"params": args}, partial_restore=True))
      return step, out["params"]
    except Exception as e:  # noqa: BLE001 -- a damaged step: try the one before
      failed.append(f"step {step}: {reason(e)}")
      warn(f"warning: checkpoint {os.path.join(directory, str(step))} does not restore ({reason(e)}); trying the "
           "previous one")
  raise CheckpointError(f"{directory}: no checkpoint restores" + (f" ({'; '.join(failed)})" if failed else
                                                                  " (the run saved none yet)"))


def model_params(path: str, cfg=None, dtype=None) -> Any:
  """Params of a model dir (HF or Orbax) or of a run dir (its newest checkpoint); unreadable weights are a
  CheckpointError naming the directory."""
  if is_run_dir(path):
    return run_params(path, dtype)[1]
  from lrl_jax.weights import load_params
  try:
    return load_params(path, cfg, dtype)
  except Exception as e:  # noqa: BLE001 -- Orbax/tensorstore raise many kinds for damaged files
    if is_user_error(e):
      raise
    raise CheckpointError(f"{path}: the weights do not load ({reason(e)})") from e


def run_config(run_dir: str) -> dict | None:
  """The training config (a dict) saved with the newest readable checkpoint of a run dir, or None."""
  directory = os.path.join(run_dir, CHECKPOINTS_DIR)
  for step in sorted((int(d) for d in os.listdir(directory) if d.isdigit()), reverse=True):
    try:
      with open(os.path.join(directory, str(step), "meta", "metadata")) as f:
        return json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return None
