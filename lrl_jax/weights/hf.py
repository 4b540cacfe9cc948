"""HF safetensors ⇄ params: the name/layout map, a shard-by-shard reader and a sharded writer.

HF (torch Linear) weights are [out, in]; ours are [in, ...] with heads split out and layers stacked on axis 0.
Every layout change is a transpose/reshape, so HF → params → HF is bit-exact in the same dtype.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lrl_jax.model.config import ModelConfig
from lrl_jax.model.params import param_shapes

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


class WeightsError(ValueError):
  """Unusable checkpoint weights; the message names the file and the tensor."""


def _layer_map(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
  """HF per-layer suffix → (our name, hf→ours, ours→hf) for one layer's tensor."""
  e, h, kh, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  same = (lambda w: w, lambda w: w)
  proj = lambda n: (lambda w: w.T.reshape(e, n, d), lambda w: w.reshape(e, n * d).T)
  mapping = {
      "input_layernorm.weight": ("input_norm", *same),
      "post_attention_layernorm.weight": ("post_attn_norm", *same),
      "self_attn.q_proj.weight": ("q_proj", *proj(h)),
      "self_attn.k_proj.weight": ("k_proj", *proj(kh)),
      "self_attn.v_proj.weight": ("v_proj", *proj(kh)),
      "self_attn.o_proj.weight": ("o_proj", lambda w: w.T.reshape(h, d, e), lambda w: w.reshape(h * d, e).T),
      "self_attn.q_norm.weight": ("q_norm", *same),
      "self_attn.k_norm.weight": ("k_norm", *same),
      "mlp.gate_proj.weight": ("gate_proj", lambda w: w.T, lambda w: w.T),
      "mlp.up_proj.weight": ("up_proj", lambda w: w.T, lambda w: w.T),
      "mlp.down_proj.weight": ("down_proj", lambda w: w.T, lambda w: w.T),
  }
  if cfg.attention_bias:
    mapping.update({
        "self_attn.q_proj.bias": ("q_bias", lambda w: w.reshape(h, d), lambda w: w.reshape(h * d)),
        "self_attn.k_proj.bias": ("k_bias", lambda w: w.reshape(kh, d), lambda w: w.reshape(kh * d)),
        "self_attn.v_proj.bias": ("v_bias", lambda w: w.reshape(kh, d), lambda w: w.reshape(kh * d)),
        "self_attn.o_proj.bias": ("o_bias", *same),
    })
  return mapping


def _top_map(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
  mapping = {
      "model.embed_tokens.weight": ("embed", lambda w: w, lambda w: w),
      "model.norm.weight": ("final_norm", lambda w: w, lambda w: w),
  }
  if not cfg.tie_word_embeddings:
    mapping["lm_head.weight"] = ("lm_head", lambda w: w.T, lambda w: w.T)
  return mapping


def shard_files(hf_dir: str) -> dict[str, list[str]]:
  """Shard file → tensor names, from the index (or the single-file checkpoint); missing shards are an error."""
  index_path = os.path.join(hf_dir, INDEX_FILE)
  if os.path.exists(index_path):
    try:
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise WeightsError(f"{index_path}: not a safetensors index (needs a 'weight_map' object): {e}") from e
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
      shards.setdefault(shard, []).append(name)
    for shard in shards:
      if not os.path.exists(os.path.join(hf_dir, shard)):
        raise WeightsError(f"{index_path}: shard '{shard}' is listed but missing from {hf_dir}")
    return shards
  single = os.path.join(hf_dir, SINGLE_FILE)
  if not os.path.exists(single):
    raise WeightsError(f"{hf_dir}: no {INDEX_FILE} or {SINGLE_FILE} found")
  with _open(single) as f:
    return {SINGLE_FILE: list(f.keys())}


def _open(path: str):
  try:
    return safe_open(path, framework="numpy")
  except (SafetensorError, OSError) as e:
    raise WeightsError(f"{path}: unreadable safetensors file ({e})") from e


def read_hf_params(hf_dir: str, cfg: ModelConfig, dtype=None) -> dict:
  """Stream the shards one at a time into preallocated stacked numpy params (peak ≈ output + one tensor)."""
  shapes = param_shapes(cfg)
  layer_map, top_map = _layer_map(cfg), _top_map(cfg)
  out: dict = {"layers": {}}
  seen: set[tuple[str, int]] = set()

  def target(name: str, src_dtype) -> np.ndarray:
    store = out["layers"] if name in shapes["layers"] else out
    if name not in store:
      shape = shapes["layers"][name] if store is out["layers"] else shapes[name]
      store[name] = np.empty(shape, dtype or src_dtype)
    return store[name]

  for shard, names in shard_files(hf_dir).items():
    path = os.path.join(hf_dir, shard)
    with _open(path) as f:
      for name in names:
        m = _LAYER_RE.match(name)
        if m and m.group(2) in layer_map:
          layer = int(m.group(1))
          ours, to_ours, _ = layer_map[m.group(2)]
          if layer >= cfg.num_layers:
            raise WeightsError(f"{path}: tensor '{name}' has layer {layer} but config has {cfg.num_layers} layers")
          expected = shapes["layers"][ours][1:]
        elif name in top_map:
          layer = -1
          ours, to_ours, _ = top_map[name]
          expected = shapes[ours]
        elif _IGNORED.search(name) or (name == "lm_head.weight" and cfg.tie_word_embeddings):
          continue
        else:
          raise WeightsError(f"{path}: unexpected tensor '{name}' for this config")
        try:
          tensor = f.get_tensor(name)
        except (SafetensorError, OSError) as e:
          raise WeightsError(f"{path}: cannot read tensor '{name}' ({e})") from e
        try:
          value = to_ours(tensor)
        except ValueError as e:
          raise WeightsError(f"{path}: tensor '{name}' has shape {list(tensor.shape)}, which does not fit "
                             f"{ours} {list(expected)} of the config") from e
        if tuple(value.shape) != tuple(expected):
          raise WeightsError(f"{path}: tensor '{name}' has shape {list(tensor.shape)}, expected a layout of "
                             f"{ours} {list(expected)}")
        dest = target(ours, tensor.dtype)
        if layer >= 0:
          dest[layer] = value
        else:
          dest[...] = value
        seen.add((ours, layer))
  _check_complete(cfg, seen, hf_dir)
  return out


def _check_complete(cfg: ModelConfig, seen: set, hf_dir: str) -> None:
  for hf_name, (ours, _, _) in _top_map(cfg).items():
    if (ours, -1) not in seen:
      raise WeightsError(f"{hf_dir}: tensor '{hf_name}' is missing")
  for suffix, (ours, _, _) in _layer_map(cfg).items():
    for layer in range(cfg.num_layers):
      if (ours, layer) not in seen:
        raise WeightsError(f"{hf_dir}: tensor 'model.layers.{layer}.{suffix}' is missing")


def hf_tensors(params: dict, cfg: ModelConfig):
  """Yield (hf_name, numpy array) in HF layout, one tensor at a time."""
  for hf_name, (ours, _, to_hf) in _top_map(cfg).items():
    yield hf_name, np.ascontiguousarray(to_hf(np.asarray(params[ours])))
  layer_map = _layer_map(cfg)
  for layer in range(cfg.num_layers):
    for suffix, (ours, _, to_hf) in layer_map.items():
      yield f"model.layers.{layer}.{suffix}", np.ascontiguousarray(to_hf(np.asarray(params["layers"][ours][layer])))


def write_hf_params(params: dict, cfg: ModelConfig, out_dir: str, max_shard_bytes: int = 2 * 2**30) -> None:
  """Write sharded safetensors + index into out_dir, flushing each shard as it fills (peak ≈ one shard)."""
  pending: dict[str, np.ndarray] = {}
  written: list[tuple[str, list[str]]] = []
  total = 0

  def flush():
    part = os.path.join(out_dir, f"shard-{len(written):05d}.part")
    save_file(pending, part, metadata={"format": "pt"})
    written.append((part, list(pending)))
    pending.clear()

  for name, tensor in hf_tensors(params, cfg):
    if pending and sum(t.nbytes for t in pending.values()) + tensor.nbytes > max_shard_bytes:
      flush()
    pending[name] = tensor
    total += tensor.nbytes
  flush()
  weight_map = {}
  for i, (part, names) in enumerate(written):
    fname = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
    os.replace(part, os.path.join(out_dir, fname))
    weight_map.update(dict.fromkeys(names, fname))
  with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
