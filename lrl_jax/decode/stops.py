"""Stop ids of a checkpoint: generation_config.json's eos_token_id, else config.json's."""

from __future__ import annotations

import json
import os


def _ids(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(int(v) for v in (value if isinstance(value, list) else [value]))


def default_stop_ids(model_dir: str) -> tuple[int, ...]:
  """eos ids from generation_config.json (preferred) or config.json; () when neither names any."""
  for name in ("generation_config.json", "config.json"):
    path = os.path.join(model_dir, name)
    if os.path.exists(path):
      with open(path) as f:
        ids = _ids(json.load(f).get("eos_token_id"))
      if ids:
        return ids
  return ()
