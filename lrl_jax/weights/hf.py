"""HF safetensors ⇄ params: the name/layout map, a validated tensor index, lazy reads and a streaming writer.

HF (torch Linear) weights are [out, in]; ours are [in, ...] with heads split out and layers stacked on axis 0.
Every layout change is a transpose/reshape, so HF → params → HF is bit-exact in the same dtype. Nothing here holds
more than one tensor: `plan_params` checks every name and shape from the shard headers before any data is read,
`read_piece` opens a shard for one tensor and closes it (its mapped pages go with it), and `write_hf_params` writes
each shard's header from shapes alone, then streams the tensors' bytes in.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Callable, Iterator, NamedTuple

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from lrl_jax.model.config import ModelConfig
from lrl_jax.model.params import param_shapes
from lrl_jax.weights import moe_names

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


class WeightsError(ValueError):
  """Unusable checkpoint weights; the message names the file and the tensor."""


class Piece(NamedTuple):
  """One HF tensor of a param: where it lives, and where it goes (layer index, or -1 for a whole top-level param).

  `row_axis`: the axis of our layout that the HF tensor's rows (axis 0) become, so a top-level tensor (the
  [vocab, embed] embedding and head) can be moved in blocks of rows.
  """
  path: str
  name: str
  layer: int
  to_ours: Callable[[np.ndarray], np.ndarray]
  row_axis: int = 0
  rows: int = 1
  expert: int = -1  # an MoE expert's tensor: one [in, out] matrix at (layer, expert) of a stacked leaf

  @property
  def index(self):
    """Where the piece goes in its leaf: (layer,), (layer, expert), or everything."""
    if self.layer < 0:
      return ...
    return (self.layer,) if self.expert < 0 else (self.layer, self.expert)


def _layer_map(cfg: ModelConfig) -> dict[str, moe_names.Entry]:
  """HF per-layer suffix → Entry (our name, hf→ours, ours→hf, expert) for one layer's tensor."""
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
  if cfg.is_moe:
    for name in moe_names.DENSE_MLP:
      del mapping[name]
    mapping.update(moe_names.moe_entries(cfg))
  if cfg.attention_bias:
    mapping.update({
        "self_attn.q_proj.bias": ("q_bias", lambda w: w.reshape(h, d), lambda w: w.reshape(h * d)),
        "self_attn.k_proj.bias": ("k_bias", lambda w: w.reshape(kh, d), lambda w: w.reshape(kh * d)),
        "self_attn.v_proj.bias": ("v_bias", lambda w: w.reshape(kh, d), lambda w: w.reshape(kh * d)),
        "self_attn.o_proj.bias": ("o_bias", *same),
    })
  return {k: moe_names.Entry(*v) for k, v in mapping.items()}


def _top_map(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
  mapping = {
      "model.embed_tokens.weight": ("embed", lambda w: w, lambda w: w),
      "model.norm.weight": ("final_norm", lambda w: w, lambda w: w),
  }
  if not cfg.tie_word_embeddings:
    mapping["lm_head.weight"] = ("lm_head", lambda w: w.T, lambda w: w.T)
  return mapping


_ROW_AXIS = {"embed": 0, "final_norm": 0, "lm_head": 1}  # where a top-level HF tensor's rows go in our layout


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


def plan_params(hf_dir: str, cfg: ModelConfig) -> tuple[dict, dict]:
  """(pieces, dtypes): for every param leaf (same nested dict as the params) its list of `Piece`s, and the source
  dtype of each leaf. Checks names, layer indices and shapes from the shard headers; no tensor data is read."""
  shapes = param_shapes(cfg)
  layer_map, top_map = _layer_map(cfg), _top_map(cfg)
  pieces: dict = {"layers": {}}
  dtypes: dict = {"layers": {}}
  for shard, names in shard_files(hf_dir).items():
    path = os.path.join(hf_dir, shard)
    with _open(path) as f:
      for name in names:
        m = _LAYER_RE.match(name)
        if m and m.group(2) in layer_map:
          layer = int(m.group(1))
          ours, to_ours, _, expert = layer_map[m.group(2)]
          if layer >= cfg.num_layers:
            raise WeightsError(f"{path}: tensor '{name}' has layer {layer} but config has {cfg.num_layers} layers")
          expected = shapes["layers"][ours][1 if expert < 0 else 2:]
          store, dstore = pieces["layers"], dtypes["layers"]
        elif name in top_map:
          layer, expert = -1, -1
          ours, to_ours, _ = top_map[name]
          expected, store, dstore = shapes[ours], pieces, dtypes
        elif _IGNORED.search(name) or (name == "lm_head.weight" and cfg.tie_word_embeddings):
          continue
        else:
          raise WeightsError(f"{path}: unexpected tensor '{name}' for this config")
        try:
          view = f.get_slice(name)
          shape, dtype = tuple(view.get_shape()), view.get_dtype()
        except (SafetensorError, OSError) as e:
          raise WeightsError(f"{path}: cannot read tensor '{name}' ({e})") from e
        try:
          ours_shape = to_ours(np.empty(shape, np.uint8)).shape
        except ValueError as e:
          raise WeightsError(f"{path}: tensor '{name}' has shape {list(shape)}, which does not fit "
                             f"{ours} {list(expected)} of the config") from e
        if tuple(ours_shape) != tuple(expected):
          raise WeightsError(f"{path}: tensor '{name}' has shape {list(shape)}, expected a layout of "
                             f"{ours} {list(expected)}")
        if dtype not in _ST_DTYPES:
          raise WeightsError(f"{path}: tensor '{name}' has dtype {dtype}; expected one of {sorted(_ST_DTYPES)}")
        store.setdefault(ours, []).append(Piece(path, name, layer, to_ours, _ROW_AXIS.get(ours, 0), shape[0],
                                                   expert))
        dstore[ours] = np.dtype(_ST_DTYPES[dtype])
  _check_complete(cfg, pieces, hf_dir)
  for leaf in pieces["layers"].values():
    leaf.sort(key=lambda p: (p.layer, p.expert))
  return pieces, dtypes


def _check_complete(cfg: ModelConfig, pieces: dict, hf_dir: str) -> None:
  for hf_name, (ours, _, _) in _top_map(cfg).items():
    if ours not in pieces:
      raise WeightsError(f"{hf_dir}: tensor '{hf_name}' is missing")
  for suffix, (ours, _, _, expert) in _layer_map(cfg).items():
    present = {p.layer for p in pieces["layers"].get(ours, []) if p.expert == expert}
    for layer in range(cfg.num_layers):
      if layer not in present:
        raise WeightsError(f"{hf_dir}: tensor 'model.layers.{layer}.{suffix}' is missing")


def read_piece(piece: Piece, dtype=None, rows: slice = slice(None)) -> np.ndarray:
  """One tensor (or the block `rows` of its HF rows) in our layout, optionally cast; the shard is opened for this
  read only, so its mapped pages are released with it."""
  with _open(piece.path) as f:
    try:
      tensor = f.get_slice(piece.name)[rows]
    except (SafetensorError, OSError) as e:
      raise WeightsError(f"{piece.path}: cannot read tensor '{piece.name}' ({e})") from e
  value = np.ascontiguousarray(piece.to_ours(tensor))
  return value if dtype is None else value.astype(dtype)


def read_hf_params(hf_dir: str, cfg: ModelConfig, dtype=None) -> dict:
  """All params as stacked numpy arrays (peak ≈ output + one tensor); for loading a model into memory."""
  pieces, dtypes = plan_params(hf_dir, cfg)
  shapes = param_shapes(cfg)

  def load(leaf_pieces, shape, src_dtype):
    out = np.empty(shape, dtype or src_dtype)
    for p in leaf_pieces:
      out[p.index] = read_piece(p, out.dtype)
    return out

  out = {k: load(pieces[k], shapes[k], dtypes[k]) for k in pieces if k != "layers"}
  out["layers"] = {k: load(v, shapes["layers"][k], dtypes["layers"][k]) for k, v in pieces["layers"].items()}
  return out


BLOCK_BYTES = 16 * 2**20  # a top-level tensor ([vocab, hidden]) is read and written in row blocks of this size


def _hf_blocks(params: dict, cfg: ModelConfig, block_bytes: int) -> Iterator[tuple[str, Iterator[np.ndarray]]]:
  """Yield (hf_name, its HF-layout rows in blocks), one tensor at a time; top-level tensors ([vocab, embed]) come in
  blocks of at most `block_bytes`. Leaves may be lazy (`leaf[index]` reads only that part)."""
  def top_blocks(leaf, to_hf, axis):
    rows = leaf.shape[axis]
    step = max(1, block_bytes * rows // max(1, int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize))
    for start in range(0, rows, step):
      index = (slice(None),) * axis + (slice(start, min(rows, start + step)),)
      yield np.ascontiguousarray(to_hf(np.asarray(leaf[index])))

  for hf_name, (ours, _, to_hf) in _top_map(cfg).items():
    yield hf_name, top_blocks(params[ours], to_hf, _ROW_AXIS[ours])
  layer_map = _layer_map(cfg)
  for layer in range(cfg.num_layers):
    for suffix, (ours, _, to_hf, expert) in layer_map.items():
      tensor = params["layers"][ours][layer if expert < 0 else (layer, expert)]
      yield f"model.layers.{layer}.{suffix}", iter([np.ascontiguousarray(to_hf(np.asarray(tensor)))])


def drain_hf_blocks(params: dict, cfg: ModelConfig, block_bytes: int = BLOCK_BYTES) -> None:
  """Read every block `write_hf_params` would write, writing nothing: the part of the processes that do not write
  when the leaves' reads are collectives (`multihost.HostSlices`)."""
  for _, blocks in _hf_blocks(params, cfg, block_bytes):
    for _ in blocks:
      pass


def hf_tensors(params: dict, cfg: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
  """Yield (hf_name, numpy array) in HF layout, one whole tensor at a time."""
  for name, blocks in _hf_blocks(params, cfg, block_bytes=2**62):
    yield name, np.concatenate(list(blocks))


def hf_layout(cfg: ModelConfig, dtypes: dict) -> list[tuple[str, tuple[int, ...], np.dtype]]:
  """(hf_name, shape, dtype) of every tensor `hf_tensors` yields, in the same order, from shapes alone."""
  shapes = param_shapes(cfg)
  out = []
  for hf_name, (ours, _, to_hf) in _top_map(cfg).items():
    out.append((hf_name, to_hf(np.empty(shapes[ours], np.uint8)).shape, dtypes[ours]))
  layer_map = _layer_map(cfg)
  for layer in range(cfg.num_layers):
    for suffix, (ours, _, to_hf, expert) in layer_map.items():
      shape = to_hf(np.empty(shapes["layers"][ours][1 if expert < 0 else 2:], np.uint8)).shape
      out.append((f"model.layers.{layer}.{suffix}", shape, dtypes["layers"][ours]))
  return out


def _st_dtype(dtype) -> str:
  names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
  return names[np.dtype(dtype)]


def _write_header(f, entries: list[tuple[str, tuple[int, ...], np.dtype]]) -> None:
  """A safetensors header (8-byte little-endian length + JSON, space-padded to 8 bytes) for tensors in order."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape, dtype in entries:
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header[name] = {"dtype": _st_dtype(dtype), "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)
  f.write(struct.pack("<Q", len(text)))
  f.write(text)


def write_hf_params(params: dict, cfg: ModelConfig, out_dir: str, max_shard_bytes: int = 2 * 2**30,
                    block_bytes: int = BLOCK_BYTES) -> None:
  """Sharded safetensors + index into out_dir; each tensor's bytes are written as produced (peak ≈ one layer
  tensor, or `block_bytes` of a top-level one).

  Shard boundaries come from the shapes and dtypes of the leaves, so each shard's header is written first.
  """
  dtypes = {k: (np.dtype(v.dtype) if k != "layers" else {n: np.dtype(a.dtype) for n, a in v.items()})
            for k, v in params.items()}
  shards, size = [[]], 0
  for entry in hf_layout(cfg, dtypes):
    nbytes = int(np.prod(entry[1], dtype=np.int64)) * entry[2].itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(entry)
    size += nbytes
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  tensors = _hf_blocks(params, cfg, block_bytes)
  weight_map, total = {}, 0
  for fname, entries in zip(names, shards):
    with open(os.path.join(out_dir, fname), "wb") as f:
      _write_header(f, entries)
      for name, shape, dtype in entries:
        got_name, blocks = next(tensors)
        assert got_name == name, (got_name, name)
        for block in blocks:
          f.write(np.ascontiguousarray(block, dtype=dtype).reshape(-1).view(np.uint8).data)
          total += block.nbytes
        weight_map[name] = fname
  with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
