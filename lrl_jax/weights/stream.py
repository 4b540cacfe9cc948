"""Orbax model params written and read one tensor at a time, so converting a checkpoint never holds the model.

Writing: each leaf is a `Streamed` source (shape, dtype and the HF tensors it is stacked from); a private Orbax
type handler writes each piece into the leaf's TensorStore array (chunked per layer) as soon as it is read, while
Orbax writes the tree metadata exactly as for any checkpoint (the leaves are recorded as numpy arrays, so every
Orbax restore path reads them). Reading: `lazy_params` opens each leaf's TensorStore array; `leaf[layer]` reads one
layer's slice.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from lrl_jax.weights import hf

BLOCK_BYTES = 16 * 2**20  # largest block of a top-level tensor ([vocab, embed]) read and written at once


@dataclasses.dataclass(frozen=True)
class Streamed:
  """A param leaf to write (a pytree leaf, not a node): its HF pieces (one per layer when stacked, else one)."""
  shape: tuple[int, ...]
  dtype: np.dtype
  pieces: tuple[hf.Piece, ...]

  @property
  def chunk_shape(self) -> tuple[int, ...]:
    """One layer of a stacked leaf; a block of at most BLOCK_BYTES worth of rows of a top-level one."""
    piece = self.pieces[0]
    if piece.layer >= 0:  # one layer, or one expert of one layer
      lead = 1 if piece.expert < 0 else 2
      return (1,) * lead + tuple(self.shape[lead:])
    return tuple(min(n, self.block_rows) if i == piece.row_axis else n for i, n in enumerate(self.shape))

  @property
  def block_rows(self) -> int:
    row_bytes = self.dtype.itemsize * int(np.prod(self.shape)) // max(1, self.shape[self.pieces[0].row_axis])
    return max(1, BLOCK_BYTES // max(1, row_bytes))

  def blocks(self) -> Iterator[tuple[tuple, np.ndarray]]:
    """(index into the leaf, data) one block at a time: whole layers, or row blocks of a top-level tensor."""
    for piece in self.pieces:
      if piece.layer >= 0:
        yield piece.index, hf.read_piece(piece, self.dtype)
        continue
      for start in range(0, piece.rows, self.block_rows):
        rows = slice(start, min(piece.rows, start + self.block_rows))
        yield (slice(None),) * piece.row_axis + (rows,), hf.read_piece(piece, self.dtype, rows)


class _StreamHandler(ocp.type_handlers.NumpyHandler):
  """Saves `Streamed` leaves piece by piece (one piece in memory at a time); restores like a numpy array."""

  async def serialize(self, values: Sequence[Streamed], infos, args=None):
    args = args or [ocp.type_handlers.SaveArgs()] * len(values)
    return [ocp.future.CommitFutureAwaitingContractedSignals(self._write(values, infos, args), name="stream")]

  async def _write(self, values, infos, args):
    for value, info, arg in zip(values, infos, args):
      await info.await_path_creation()
      ocdbt = info.is_ocdbt_checkpoint  # per-process OCDBT subdir, merged by Orbax at the end as for any save
      spec = ocp.type_handlers.get_json_tspec_write(info, use_ocdbt=ocdbt, global_shape=value.shape,
                                                    local_shape=value.chunk_shape, dtype=value.dtype, arg=arg,
                                                    process_index=jax.process_index() if ocdbt else None)
      store = await ts.open(ts.Spec(spec), create=True, open=True, context=info.ts_context)
      for index, data in value.blocks():  # one block in memory; tensorstore reads it in place, no copy
        await store[index].write(data, can_reference_source_data_indefinitely=True)


def streamed_params(hf_dir: str, cfg, dtype=None) -> dict:
  """The params tree of an HF dir as `Streamed` leaves (validated against cfg; no tensor data read)."""
  pieces, dtypes = hf.plan_params(hf_dir, cfg)
  shapes = hf.param_shapes(cfg)
  leaf = lambda p, shape, src: Streamed(tuple(shape), np.dtype(dtype or src), tuple(p))
  out = {k: leaf(pieces[k], shapes[k], dtypes[k]) for k in pieces if k != "layers"}
  out["layers"] = {k: leaf(v, shapes["layers"][k], dtypes["layers"][k]) for k, v in pieces["layers"].items()}
  return out


def save_streamed(params: dict, path: str) -> None:
  """Write a tree of `Streamed` leaves as an Orbax params checkpoint at `path` (which must not exist)."""
  registry = ocp.type_handlers.create_type_handler_registry((Streamed, _StreamHandler()),
                                                            (jax.Array, ocp.type_handlers.ArrayHandler()))
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
  with ocp.Checkpointer(handler) as checkpointer:
    checkpointer.save(os.path.abspath(path), args=ocp.args.PyTreeSave(params))


class LazyLeaf:
  """One param of an Orbax params dir, read on demand: `leaf[i]` reads layer i, `np.asarray(leaf)` all of it."""

  def __init__(self, store: ts.TensorStore, dtype=None):
    self._store = store
    self.shape = tuple(store.shape)
    self.dtype = np.dtype(dtype or store.dtype.numpy_dtype)

  def __getitem__(self, index) -> np.ndarray:
    return np.asarray(self._store[index].read().result()).astype(self.dtype, copy=False)

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    return np.asarray(self._store.read().result()).astype(dtype or self.dtype, copy=False)


def lazy_params(params_dir: str, cfg, dtype=None) -> dict:
  """The params tree of an Orbax params dir (Orbax's OCDBT format) as `LazyLeaf`s, read as `dtype` if given."""
  base = f"file://{os.path.abspath(params_dir)}/"
  keys = {k.decode() for k in ts.KvStore.open({"driver": "ocdbt", "base": base}).result().list().result()}

  def leaf(path: tuple[str, ...]) -> LazyLeaf:
    name = ".".join(path)
    driver = "zarr3" if f"{name}/zarr.json" in keys else "zarr"
    if driver == "zarr" and f"{name}/.zarray" not in keys:
      raise hf.WeightsError(f"{params_dir}: array '{name}' is missing")
    spec = {"driver": driver, "kvstore": {"driver": "ocdbt", "base": base, "path": name}}
    return LazyLeaf(ts.open(spec).result(), dtype)

  shapes = hf.param_shapes(cfg)
  out: dict[str, Any] = {k: leaf((k,)) for k in shapes if k != "layers"}
  out["layers"] = {k: leaf(("layers", k)) for k in shapes["layers"]}
  for path, tree in (((k,), out[k]) for k in out if k != "layers"):
    if tree.shape != tuple(shapes[path[0]]):
      raise hf.WeightsError(f"{params_dir}: array '{path[0]}' has shape {list(tree.shape)}, the config needs "
                            f"{list(shapes[path[0]])}")
  for k, tree in out["layers"].items():
    if tree.shape != tuple(shapes["layers"][k]):
      raise hf.WeightsError(f"{params_dir}: array 'layers.{k}' has shape {list(tree.shape)}, the config needs "
                            f"{list(shapes['layers'][k])}")
  return out
