"""Load and save model directories: HF (safetensors) or Orbax (`params/` + config and tokenizer files beside it).

Writers build the whole directory under a temporary name and rename it into place, so a failed run never
leaves a complete-looking output.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lrl_jax.files import atomic_dir
from lrl_jax.model.config import ModelConfig, load_config
from lrl_jax.weights import hf, stream

PARAMS_DIR = "params"
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth")


def is_orbax_dir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, PARAMS_DIR))


def is_hf_dir(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in (hf.INDEX_FILE, hf.SINGLE_FILE))


def side_files(src_dir: str) -> list[str]:
  """Config, generation config, tokenizer and remote-code files: everything but weights and the params dir."""
  return sorted(f for f in os.listdir(src_dir)
                if os.path.isfile(os.path.join(src_dir, f)) and not f.endswith(_WEIGHT_SUFFIXES))


def _this_process() -> ocp.options.MultiprocessingOptions:
  """A model dir holds host arrays one process reads or writes alone: in a multi-process run Orbax must not wait
  for the others (its default is a collective save with a barrier across every process)."""
  me = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                            barrier_sync_key_prefix=f"process{me}")


def save_orbax_params(params: Any, path: str, collective: bool = False) -> None:
  """Write params with Orbax at `path` (which must not exist) and wait for completion; at most 1 GB in flight.
  `collective`: params are sharded arrays every process calls this with, each writing its own shards (nothing is
  gathered); else this process writes its (host or local) arrays alone."""
  options = ocp.options.MultiprocessingOptions() if collective else _this_process()
  checkpointer = ocp.StandardCheckpointer(save_concurrent_gb=1, multiprocessing_options=options)
  checkpointer.save(os.path.abspath(path), params)
  checkpointer.wait_until_finished()


def restore_orbax_params(path: str, target: Any | None = None) -> Any:
  """Restore params from an Orbax params dir; `target` (ShapeDtypeStructs with shardings) places them directly,
  default: whole on this process's first device, whatever topology saved them."""
  checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_this_process())
  path = os.path.abspath(path)
  if target is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          checkpointer.metadata(path).item_metadata.tree)
  return checkpointer.restore(path, target)


def write_orbax_dir(params: Any, out_dir: str, src_dir: str | None = None, cfg: ModelConfig | None = None,
                    overwrite: bool = False, tokenizer=None, stop_ids: tuple[int, ...] = ()) -> None:
  """An Orbax model directory: params/ plus the side files of src_dir, or a config.json made from cfg, the
  tokenizer's files and a generation_config.json naming the stop ids."""
  with atomic_dir(out_dir, overwrite) as tmp:
    save_orbax_params(params, os.path.join(tmp, PARAMS_DIR))
    if tokenizer is not None:
      tokenizer.save_pretrained(tmp)
    if stop_ids:
      with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": list(stop_ids)}, f)
    write_side_files(tmp, src_dir, cfg)


def write_hf_dir(params: Any, cfg: ModelConfig, out_dir: str, src_dir: str | None = None,
                 overwrite: bool = False, max_shard_bytes: int = 2 * 2**30) -> None:
  """An HF model directory: sharded safetensors + index + config/tokenizer files."""
  with atomic_dir(out_dir, overwrite) as tmp:
    hf.write_hf_params(params, cfg, tmp, max_shard_bytes)
    write_side_files(tmp, src_dir, cfg)


def write_side_files(dst: str, src_dir: str | None, cfg: ModelConfig | None = None) -> None:
  """Copy the side files of src_dir into dst, or write a config.json made from cfg."""
  if src_dir is not None:
    for name in side_files(src_dir):
      shutil.copy2(os.path.join(src_dir, name), os.path.join(dst, name))
  if not os.path.exists(os.path.join(dst, "config.json")):
    if cfg is None:
      raise ValueError("a config.json is needed: pass src_dir or cfg")
    with open(os.path.join(dst, "config.json"), "w") as f:
      json.dump(cfg.to_hf_dict(), f, indent=2)


def hf_to_orbax_dir(hf_dir: str, out_dir: str, dtype=None, overwrite: bool = False) -> None:
  """HF safetensors dir → Orbax model dir, one tensor in memory at a time (all names and shapes checked first)."""
  cfg = load_config(hf_dir)
  leaves = stream.streamed_params(hf_dir, cfg, dtype)
  with atomic_dir(out_dir, overwrite) as tmp:
    stream.save_streamed(leaves, os.path.join(tmp, PARAMS_DIR))
    write_side_files(tmp, hf_dir, cfg)


def orbax_to_hf_dir(ckpt_dir: str, out_dir: str, dtype=None, overwrite: bool = False,
                    max_shard_bytes: int = 2 * 2**30) -> None:
  """Orbax model dir → HF safetensors dir (sharded, with index), reading and writing one tensor at a time."""
  if not is_orbax_dir(ckpt_dir):
    raise FileNotFoundError(f"{ckpt_dir}: not an Orbax model directory (no '{PARAMS_DIR}/')")
  cfg = load_config(ckpt_dir)
  params = stream.lazy_params(os.path.join(ckpt_dir, PARAMS_DIR), cfg, dtype)
  write_hf_dir(params, cfg, out_dir, src_dir=ckpt_dir, overwrite=overwrite, max_shard_bytes=max_shard_bytes)


def load_tokenizer(path: str):
  """The tokenizer saved in a model directory, or None when it has none.

  Never runs a checkpoint's remote code: the hub's SDAR directories name remote tokenizer classes in auto_map, and
  transformers would otherwise ask on the terminal (and wait ~15 s); its own Qwen2 tokenizer reads their files.
  """
  if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
    return None
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def load_params(path: str, cfg: ModelConfig | None = None, dtype=None) -> Any:
  """Params of an HF or Orbax model directory as jax arrays (optionally cast to dtype)."""
  cfg = cfg or load_config(path)
  if is_orbax_dir(path):
    params = restore_orbax_params(os.path.join(path, PARAMS_DIR))
  elif is_hf_dir(path):
    params = hf.read_hf_params(path, cfg)
  else:
    raise FileNotFoundError(f"{path}: neither an Orbax model directory (no '{PARAMS_DIR}/') nor an HF one "
                            f"(no {hf.INDEX_FILE} or {hf.SINGLE_FILE})")
  return jax.tree.map(lambda x: jnp.asarray(x, dtype=dtype), params)


def load_checkpoint(path: str, dtype=None) -> tuple[ModelConfig, Any, Any]:
  """(config, params, tokenizer) of an HF or Orbax model directory; tokenizer is None if none is saved."""
  cfg = load_config(path)
  return cfg, load_params(path, cfg, dtype), load_tokenizer(path)


