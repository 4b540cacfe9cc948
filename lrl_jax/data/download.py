"""Fetch the published dataset files (Gen-Verse releases on the Hugging Face Hub) and write them atomically."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from lrl_jax import files
from lrl_jax.data.formats import DATASET_KINDS, load_records

TRAIN_SPLIT = {"GSM8K_train", "MATH_train", "PrimeIntellect"}


class DownloadError(RuntimeError):
  """The file could not be fetched (offline, unknown name, hub error); the message says what to do."""


def hub_location(name: str) -> tuple[str, str]:
  """(repo_id, filename) of a published dataset, following the reference's `Gen-Verse/<name>` layout."""
  split = "train" if name in TRAIN_SPLIT else "test"
  return f"Gen-Verse/{name}", f"{split}/{name}.json"


def canonical_name(name: str) -> str:
  """The published spelling of a dataset name given in any case."""
  by_lower = {k.lower(): k for k in DATASET_KINDS}
  if name.lower() not in by_lower:
    raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(DATASET_KINDS)}")
  return by_lower[name.lower()]


def _check_online(endpoint: str) -> None:
  """Fail fast with one clear message instead of the hub client's minute of retries when there is no network."""
  if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
    raise DownloadError("HF_HUB_OFFLINE is set: downloads are disabled")
  host = urlparse(endpoint).hostname or endpoint
  try:
    socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
  except OSError as e:
    raise DownloadError(f"no network: cannot resolve {host} ({e})") from e


def _hub_fetch(repo_id: str, filename: str) -> str:
  """Download through huggingface_hub's cache and return the cached path."""
  from huggingface_hub import constants, hf_hub_download

  _check_online(constants.ENDPOINT)
  try:
    return hf_hub_download(repo_id, filename, repo_type="dataset")
  except OSError as e:  # offline, timeouts and missing entries all derive from OSError
    raise DownloadError(f"the hub did not deliver {repo_id}/{filename}: {e}") from e


def download(name: str, out_dir: str | Path, fetch: Callable[[str, str], str] | None = None) -> Path:
  """Fetch dataset `name` into `out_dir/<name>.json`, validated against the format, via a temp file then rename."""
  name = canonical_name(name)
  repo_id, filename = hub_location(name)
  fetch = fetch or _hub_fetch
  try:
    cached = fetch(repo_id, filename)
  except DownloadError as e:
    raise DownloadError(
      f"cannot download {name}: {e}. On a machine with network, fetch "
      f"https://huggingface.co/datasets/{repo_id}/resolve/main/{filename} and copy it to "
      f"{Path(out_dir) / (name + '.json')}") from e
  load_records(cached)
  target = Path(out_dir) / f"{name}.json"
  with open(cached, "rb") as src:
    files.write_with(target, lambda f: shutil.copyfileobj(src, f), "wb")
  return target
