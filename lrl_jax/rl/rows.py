"""Training rows of SPEC §7.1: which positions the noisy copy masks and which tokens each row scores; numpy.

One sequence = prompt (positions 0..P-1) + every response position the sampler filled through the end of its
last decoded block (L = P + len(step_map)). Blocks count from position 0, so block of position p is p // B and the
first response block may hold prompt positions, which are never masked nor scored. Only the first `n_trainable`
response tokens (through the first stop id) are ever scored; later ones keep their step for the noisy layout.
"""

from typing import NamedTuple, Sequence

import numpy as np

MODES = ("block_masked", "trajectory")


def _check(prompt_len: int, response_len: int, n_trainable: int) -> None:
  if prompt_len < 0 or not 1 <= n_trainable <= response_len:
    raise ValueError(f"need prompt_len >= 0 and 1 <= n_trainable <= {response_len}; got {prompt_len}, {n_trainable}")


def _with_prompt(prompt_len: int, response_part: np.ndarray) -> np.ndarray:
  """[R, n] response-position flags -> [R, P + n] with the prompt positions False."""
  return np.concatenate([np.zeros((response_part.shape[0], prompt_len), bool), response_part], axis=1)


def block_masked_rows(prompt_len: int, response_len: int, n_trainable: int) -> tuple[np.ndarray, np.ndarray]:
  """One row: noisy copy masks every response position, scores the n_trainable ones -> ([1, L], [1, L]) bool."""
  _check(prompt_len, response_len, n_trainable)
  masked = np.ones((1, response_len), bool)
  scored = (np.arange(response_len) < n_trainable)[None]
  return _with_prompt(prompt_len, masked), _with_prompt(prompt_len, scored)


def step_groups(prompt_len: int, step_map: np.ndarray, block_size: int, shrink: int) -> np.ndarray:
  """Per response token [n]: its rank among its block's distinct steps, integer-divided by shrink."""
  steps = np.asarray(step_map)
  blocks = (prompt_len + np.arange(len(steps))) // block_size
  groups = np.empty(len(steps), np.int64)
  for b in np.unique(blocks):
    sel = blocks == b
    _, rank = np.unique(steps[sel], return_inverse=True)
    groups[sel] = rank.reshape(-1) // shrink
  return groups


def trajectory_rows(prompt_len: int, step_map: np.ndarray, n_trainable: int, block_size: int,
                    shrink: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Rows replaying the sampler's states -> (noisy_masked [R, L], scored [R, L]) bool.

  Row r scores, in every block, the trainable tokens of the block's r-th group of `shrink` consecutive distinct
  steps, with the noisy copy masking the block's tokens of group >= r (the whole block once r passes its last
  group). Rows that would score no token (groups holding only post-stop tokens) are dropped.
  """
  steps = np.asarray(step_map)
  n = len(steps)
  _check(prompt_len, n, n_trainable)
  if shrink < 1 or block_size < 1:
    raise ValueError(f"need shrink >= 1 and block_size >= 1; got {shrink}, {block_size}")
  groups = step_groups(prompt_len, steps, block_size, shrink)  # [n]
  blocks = (prompt_len + np.arange(n)) // block_size
  num_groups = np.zeros(blocks.max() + 1, np.int64)
  np.maximum.at(num_groups, blocks, groups + 1)
  r = np.arange(num_groups.max())[:, None]  # [R, 1]
  masked = (groups[None] >= r) | (r >= num_groups[blocks][None])  # [R, n]
  scored = (groups[None] == r) & (np.arange(n) < n_trainable)[None]  # [R, n]
  live = scored.any(axis=1)
  return _with_prompt(prompt_len, masked[live]), _with_prompt(prompt_len, scored[live])


def sequence_rows(mode: str, prompt_len: int, step_map: np.ndarray, n_trainable: int, block_size: int,
                  shrink: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Rows of one sequence for `mode` in MODES -> (noisy_masked [R, L], scored [R, L]) bool."""
  if mode == "block_masked":
    return block_masked_rows(prompt_len, len(step_map), n_trainable)
  if mode == "trajectory":
    return trajectory_rows(prompt_len, step_map, n_trainable, block_size, shrink)
  raise ValueError(f"mode {mode!r} is not one of {MODES}")


class RowBatch(NamedTuple):
  """Fixed-shape training rows; pad rows have row_to_seq -1, pad positions valid False, and neither is scored."""
  tokens: np.ndarray  # [rows, Lmax] int32 clean tokens (pad_id at pad positions)
  noisy_masked: np.ndarray  # [rows, Lmax] bool, positions the noisy copy replaces by the mask token
  scored: np.ndarray  # [rows, Lmax] bool, tokens whose log-prob is trained
  valid: np.ndarray  # [rows, Lmax] bool, real (non-pad) positions
  row_to_seq: np.ndarray  # [rows] int32, sequence index of each row, -1 for pad rows


def pad_rows(seq_rows: Sequence[tuple[np.ndarray, np.ndarray]], tokens: Sequence[np.ndarray], pad_id: int,
             num_rows: int | None = None, max_len: int | None = None) -> RowBatch:
  """Stack the rows of many sequences (seq_rows[k] = ([R_k, L_k], [R_k, L_k]), tokens[k] [L_k]) into one batch."""
  total = sum(noisy.shape[0] for noisy, _ in seq_rows)
  longest = max((len(t) for t in tokens), default=0)
  num_rows = total if num_rows is None else num_rows
  max_len = longest if max_len is None else max_len
  if total > num_rows or longest > max_len:
    raise ValueError(f"{total} rows of length <= {longest} do not fit [{num_rows}, {max_len}]")
  out = RowBatch(np.full((num_rows, max_len), pad_id, np.int32), np.zeros((num_rows, max_len), bool),
                 np.zeros((num_rows, max_len), bool), np.zeros((num_rows, max_len), bool),
                 np.full(num_rows, -1, np.int32))
  start = 0
  for k, ((noisy, scored), toks) in enumerate(zip(seq_rows, tokens, strict=True)):
    rows, length = noisy.shape
    if scored.shape != noisy.shape or len(toks) != length:
      raise ValueError(f"sequence {k}: rows {noisy.shape}/{scored.shape} do not match {len(toks)} tokens")
    sl = slice(start, start + rows)
    out.tokens[sl, :length] = toks
    out.noisy_masked[sl, :length] = noisy
    out.scored[sl, :length] = scored
    out.valid[sl, :length] = True
    out.row_to_seq[sl] = k
    start += rows
  return out


def per_row(values: np.ndarray, row_to_seq: np.ndarray, fill: float = 0.0) -> np.ndarray:
  """Copy per-sequence values [num_seq] to every row [rows]; pad rows (row_to_seq < 0) get `fill`."""
  values = np.asarray(values)
  row_to_seq = np.asarray(row_to_seq)
  return np.where(row_to_seq >= 0, values[np.maximum(row_to_seq, 0)], np.asarray(fill, values.dtype))
