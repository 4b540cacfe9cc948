"""Host side of an RL update: rollout records → fixed-shape training rows → accumulated batches → micro-batches.

Shapes are bucketed (rows to a multiple of the micro-batch, length to `length_bucket`: whole blocks, at most ~12.5%
padding) so the compiled step functions see few distinct shapes. In a multi-process run each process builds the rows
of its own sequences: the row length, the split into updates (by global sequence index) and the loss totals
(`totals`, summed over processes) are those of the whole batch, so the weights equal a one-process run's.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np

from lrl_jax.decode.records import Record
from lrl_jax.rl import losses, rows


class Rows(NamedTuple):
  """Training rows of the kept responses plus what the loss needs per row."""
  batch: rows.RowBatch  # tokens/noisy_masked/scored/valid [rows, L], row_to_seq [rows]
  advantages: np.ndarray  # [rows]
  correct: np.ndarray  # [rows] 1.0 for responses judged correct
  sampler_logp: np.ndarray  # [rows, L] sampler log-prob at scored positions, 0 elsewhere


def length_bucket(length: int, block_size: int, multiple: int = 0) -> int:
  """Row length padded to whole blocks, then to `multiple` tokens if given, else to 8 buckets per octave.

  Octave buckets: n blocks in (2^k, 2^(k+1)] round up to a multiple of 2^(k-3) blocks (<= 12.5% padding), so a
  256 + 8192-token row at block 32 takes 9216 positions, not 16384; up to 8 + 8 log2(n / 8) buckets of n blocks.
  """
  blocks = max(1, -(-length // block_size))
  if multiple:
    return -(-blocks * block_size // multiple) * multiple
  step = 1 << max(0, (blocks - 1).bit_length() - 4)
  return -(-blocks // step) * step * block_size


def length_buckets(max_length: int, block_size: int, multiple: int = 0) -> list[int]:
  """Every value `length_bucket` takes for lengths 1..max_length, ascending."""
  out, length = [], 1
  while length <= max_length:
    out.append(length_bucket(length, block_size, multiple))
    length = out[-1] + 1
  return out


def training_rows(records: Sequence[Record], advantages: np.ndarray, correct: np.ndarray, *, mode: str,
                  block_size: int, shrink: int, pad_id: int, row_multiple: int, len_multiple: int = 0,
                  max_len: int | None = None) -> Rows:
  """Rows of every record (SPEC §7.1 `mode`), padded to [multiple of row_multiple, max_len] (default: the bucketed
  length of the longest record); `records` is a list of Records or a DecodedBatch."""
  seq_rows, tokens = [], []
  for r in records:
    seq_rows.append(rows.sequence_rows(mode, len(r.prompt_ids), r.decoded_step_map.astype(np.int64), r.length,
                                       block_size, shrink))
    tokens.append(np.concatenate([r.prompt_ids, r.decoded_ids]).astype(np.int32))
  total = sum(n.shape[0] for n, _ in seq_rows)
  num_rows = max(row_multiple, -(-total // row_multiple) * row_multiple)
  if max_len is None:
    max_len = length_bucket(max(len(t) for t in tokens), block_size, len_multiple)
  batch = rows.pad_rows(seq_rows, tokens, pad_id, num_rows=num_rows, max_len=max_len)
  if not records:  # a process whose sequences were all filtered out: padding only
    zeros = np.zeros(num_rows, np.float32)
    return Rows(batch, zeros, zeros, np.zeros(batch.tokens.shape, np.float32))
  sampler = np.zeros(batch.tokens.shape, np.float32)
  for i, k in enumerate(batch.row_to_seq):
    if k < 0 or records[k].logprobs is None:
      continue
    p = len(records[k].prompt_ids)
    lp = records[k].logprobs
    sampler[i, p:p + len(lp)] = lp
  sampler = np.where(batch.scored, sampler, 0.0)
  return Rows(batch, rows.per_row(np.asarray(advantages, np.float32), batch.row_to_seq),
              rows.per_row(np.asarray(correct, np.float32), batch.row_to_seq), sampler)


def update_groups(row_to_seq: np.ndarray, num_updates: int, num_seqs: int | None = None,
                  seq_ids: np.ndarray | None = None) -> list[np.ndarray]:
  """Split rows into `num_updates` accumulated batches, keeping each sequence's rows together.

  With `num_seqs` (the whole batch's sequences; these rows hold sequences seq_ids[row_to_seq], in a multi-process
  run this process's, not necessarily contiguous: refill rounds interleave the processes' shares), the split is the
  whole batch's and every batch is listed, also one holding none of these rows.
  """
  if num_seqs is None:
    seqs = np.unique(row_to_seq[row_to_seq >= 0])
    parts = np.array_split(seqs, max(1, min(num_updates, len(seqs))))
    return [np.flatnonzero(np.isin(row_to_seq, part)) for part in parts if len(part)]
  parts = np.array_split(np.arange(num_seqs), max(1, min(num_updates, num_seqs)))
  ids = np.asarray(np.arange(num_seqs) if seq_ids is None else seq_ids, np.int64)
  held = row_to_seq >= 0
  global_seq = np.full(row_to_seq.shape, -1, np.int64)
  global_seq[held] = ids[row_to_seq[held]]
  return [np.flatnonzero(held & np.isin(global_seq, part)) for part in parts]


def pad_to(r: Rows, num_rows: int, pad_id: int) -> Rows:
  """Rows with pad rows appended up to `num_rows` (every process of a run holds as many)."""
  extra = num_rows - r.batch.tokens.shape[0]
  if extra < 0:
    raise ValueError(f"{r.batch.tokens.shape[0]} rows do not fit {num_rows}")
  grow = lambda x, fill: np.concatenate([x, np.full((extra,) + x.shape[1:], fill, x.dtype)])
  b = r.batch
  batch = rows.RowBatch(grow(b.tokens, pad_id), grow(b.noisy_masked, False), grow(b.scored, False),
                        grow(b.valid, False), grow(b.row_to_seq, -1))
  return Rows(batch, grow(r.advantages, 0), grow(r.correct, 0), grow(r.sampler_logp, 0))


def totals(r: Rows, idx: np.ndarray) -> np.ndarray:
  """[4] int64: scored tokens, sequences with one, and both over correct rows, of rows `idx` (losses.loss_weights)."""
  b = r.batch
  scored = b.scored[idx]
  nll = scored & (r.correct[idx] > 0.5)[:, None]
  seqs = lambda mask: len(np.unique(b.row_to_seq[idx][mask.any(axis=1)]))
  return np.asarray([scored.sum(), seqs(scored), nll.sum(), seqs(nll)], np.int64)


def micro_batches(r: Rows, idx: np.ndarray, micro_rows: int, loss_cfg: losses.LossConfig,
                  logp_old: np.ndarray, logp_ref: np.ndarray, batch_totals: np.ndarray | None = None,
                  num_batches: int | None = None) -> Iterator[dict]:
  """Micro-batches (dicts of arrays) of the accumulated batch `idx`, weights exact over the whole of it.

  A batch split over processes gives its `batch_totals` (sum of every process's `totals`) and the `num_batches` every
  process runs (the most any needs); the missing ones are all padding.
  """
  num_batches = max(num_batches or 0, -(-len(idx) // micro_rows))
  pad = num_batches * micro_rows - len(idx)
  b = r.batch
  scored = b.scored[idx]
  weights = losses.loss_weights(scored, b.row_to_seq[idx], r.correct[idx], loss_cfg,
                                totals=None if batch_totals is None else tuple(int(t) for t in batch_totals))
  fields = {
      "tokens": b.tokens[idx], "noisy_masked": b.noisy_masked[idx], "valid": b.valid[idx], "scored": scored,
      "advantages": r.advantages[idx], "logp_old": logp_old[idx], "logp_ref": logp_ref[idx],
      "w_policy": weights.policy, "w_kl": weights.kl, "w_nll": weights.nll,
  }
  fields = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in fields.items()}
  for lo in range(0, num_batches * micro_rows, micro_rows):
    yield {k: v[lo:lo + micro_rows] for k, v in fields.items()}
