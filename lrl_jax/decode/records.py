"""Typed rollout records (SPEC §5): one finished sequence (`Record`) and a batch of them in prompt order
(`DecodedBatch`), numpy arrays throughout; JSON lists are made only at the file edges (`to_json_records`).

A sequence's decoded tokens run through the end of its last decoded block (the training rows replay them); its
response is their first `length` tokens: through the first stop id, at most its budget of new tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np


def first_stop(ids: np.ndarray, stop_ids: Sequence[int]) -> int | None:
  """Index of the first stop id in ids, or None."""
  hits = np.flatnonzero(np.isin(ids, list(stop_ids))) if stop_ids else []
  return int(hits[0]) if len(hits) else None


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
  """One finished sequence."""
  prompt_ids: np.ndarray  # [P] int32
  decoded_ids: np.ndarray  # [D] int32: every token through the end of the last decoded block
  decoded_step_map: np.ndarray  # [D] int32: denoising forward that filled each token
  length: int  # response tokens (<= D)
  forwards_total: int  # denoising + commit forwards of the sequence
  truncated: bool  # no stop id within the budget
  logprobs: np.ndarray | None = None  # [length] float32: the sampler's log-prob of each response token
  text: str | None = None  # the response, detokenized (when the decoder has a tokenizer)

  @property
  def response_ids(self) -> np.ndarray:
    """[length] int32."""
    return self.decoded_ids[:self.length]

  @property
  def step_map(self) -> np.ndarray:
    """[length] int32: the response's step map."""
    return self.decoded_step_map[:self.length]

  @property
  def num_forwards(self) -> int:
    """Denoising forwards that filled response tokens (SPEC §6: the TPF denominator)."""
    return int(len(np.unique(self.step_map)))

  @property
  def row_length(self) -> int:
    """Prompt + decoded tokens: the length of the sequence's training rows."""
    return len(self.prompt_ids) + len(self.decoded_ids)

  def to_json(self, trajectory: bool = True) -> dict[str, Any]:
    """The SPEC §5 JSON record (a file edge): decoded_ids/decoded_step_map with `trajectory`, text and logprobs
    when present."""
    out: dict[str, Any] = {
        "prompt_ids": self.prompt_ids.tolist(), "response_ids": self.response_ids.tolist(),
        "step_map": self.step_map.tolist(), "num_forwards": self.num_forwards,
        "forwards_total": int(self.forwards_total), "truncated": bool(self.truncated)}
    if trajectory:
      out.update(decoded_ids=self.decoded_ids.tolist(), decoded_step_map=self.decoded_step_map.tolist())
    if self.text is not None:
      out["text"] = self.text
    if self.logprobs is not None:
      out["logprobs"] = self.logprobs.tolist()
    return out


def from_row(prompt: Sequence[int], rows, i: int, max_new_tokens: int, block_size: int, stop_ids: Sequence[int],
             tokenizer=None, with_logprobs: bool = False) -> Record:
  """The record of row i of a finished slot's buffers `rows` (tokens/step_map/logp [R, n], cur/nf/commits [R]):
  tokens from the prompt's end through the end of the last decoded block (cur + block_size)."""
  p = len(prompt)
  decoded_end = int(rows.cur[i]) + block_size
  decoded = np.array(rows.tokens[i, p:decoded_end], np.int32)
  decoded_steps = np.array(rows.step_map[i, p:decoded_end], np.int32)
  limit = min(max_new_tokens, len(decoded))
  stop = first_stop(decoded[:limit], stop_ids)
  length = limit if stop is None else stop + 1
  text = tokenizer.decode(decoded[:length].tolist(), skip_special_tokens=True) if tokenizer is not None else None
  logprobs = np.array(rows.logp[i, p:p + length], np.float32) if with_logprobs else None
  return Record(np.asarray(prompt, np.int32), decoded, decoded_steps, length, int(rows.nf[i] + rows.commits[i]),
                stop is None, logprobs, text)


def _padded(parts: Sequence[np.ndarray], dtype, fill) -> np.ndarray:
  """[n, longest] of 1-d arrays, `fill` past each one's end."""
  out = np.full((len(parts), max((len(x) for x in parts), default=0)), fill, dtype)
  for k, x in enumerate(parts):
    out[k, :len(x)] = x
  return out


@dataclasses.dataclass(frozen=True, eq=False)  # __eq__ below compares the arrays
class DecodedBatch:
  """Records of n prompts in prompt order, padded to the longest; `batch[k]` is the Record of prompt k."""
  prompt_ids: np.ndarray  # [n, P] int32, 0 past prompt_len
  prompt_len: np.ndarray  # [n] int32
  decoded_ids: np.ndarray  # [n, D] int32, 0 past decoded_len
  decoded_step_map: np.ndarray  # [n, D] int32, -1 past decoded_len
  decoded_len: np.ndarray  # [n] int32
  length: np.ndarray  # [n] int32 response tokens
  forwards_total: np.ndarray  # [n] int32
  truncated: np.ndarray  # [n] bool
  logprobs: np.ndarray | None  # [n, D] float32, 0 past length; None when decoded without log-probs
  text: tuple[str | None, ...]  # [n]

  @classmethod
  def stack(cls, records: Sequence[Record]) -> "DecodedBatch":
    with_logp = [r.logprobs is not None for r in records]
    if any(with_logp) and not all(with_logp):
      raise ValueError("records with and without log-probs cannot be stacked")
    count = lambda f: np.asarray([f(r) for r in records], np.int32).reshape(-1)
    return cls(_padded([r.prompt_ids for r in records], np.int32, 0), count(lambda r: len(r.prompt_ids)),
               _padded([r.decoded_ids for r in records], np.int32, 0),
               _padded([r.decoded_step_map for r in records], np.int32, -1), count(lambda r: len(r.decoded_ids)),
               count(lambda r: r.length), count(lambda r: r.forwards_total),
               np.asarray([r.truncated for r in records], bool).reshape(-1),
               _padded([r.logprobs for r in records], np.float32, 0.0) if records and all(with_logp) else None,
               tuple(r.text for r in records))

  def __len__(self) -> int:
    return len(self.prompt_len)

  def __getitem__(self, k: int) -> Record:
    n, d, m = int(self.prompt_len[k]), int(self.decoded_len[k]), int(self.length[k])
    return Record(self.prompt_ids[k, :n], self.decoded_ids[k, :d], self.decoded_step_map[k, :d], m,
                  int(self.forwards_total[k]), bool(self.truncated[k]),
                  None if self.logprobs is None else self.logprobs[k, :m], self.text[k])

  def __iter__(self) -> Iterator[Record]:
    return (self[k] for k in range(len(self)))

  @property
  def num_forwards(self) -> np.ndarray:
    """[n] int32: denoising forwards that filled response tokens, per record."""
    return np.asarray([r.num_forwards for r in self], np.int32).reshape(-1)

  def __eq__(self, other: object) -> bool:
    """Every field equal, exactly (tokens, step maps, counters, flags, log-probs, texts)."""
    if not isinstance(other, DecodedBatch):
      return NotImplemented
    same = lambda a, b: (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
    return all(same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)
               if f.name != "text") and self.text == other.text

  __hash__ = None  # arrays: mutable contents

  def to_json_records(self, trajectory: bool = True) -> list[dict[str, Any]]:
    """The SPEC §5 JSON records, in prompt order (for the generate and eval output files)."""
    return [r.to_json(trajectory) for r in self]
