"""One step's rollouts: decode with the engine and judge each record as soon as its sequence finishes.

Records stream out of the engine in finishing order; a judging thread scores them in whatever batches have piled up
(the judge's worker processes do the work), so judging overlaps decoding instead of following it. The timings say
how much: decode seconds, judge seconds, and the wait for the judge after the last record. In a multi-process run
each process decodes and judges its own share; `gather` then gives every process the step's responses in order
(the full record only where it was decoded).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from lrl_jax.data import CodeRecord
from lrl_jax.decode import Record
from lrl_jax.rewards import judge_responses

_END = None


class Rollout(NamedTuple):
  """Records (prompt order), correctness [n] (code: pass rate) and the step's timing metrics."""
  records: list[Record]
  correct: np.ndarray
  timings: dict[str, float]


class Response(NamedTuple):
  """One response of the step as every process knows it; `record` only on the process that decoded it."""
  length: int  # response tokens through the first stop (what TPF counts)
  forwards: int  # denoising forwards it took
  truncated: bool
  row_length: int  # prompt + decoded tokens: the length of its training rows
  record: Record | None


class Judged(NamedTuple):
  """The step's responses [n] as every process knows them, and their correctness [n] (code: pass rate)."""
  responses: list[Response]
  correct: np.ndarray


def _summary(record: Record) -> Response:
  """What the other processes learn of a response: all but its record."""
  return Response(record.length, record.num_forwards, record.truncated, record.row_length, None)


def gather(local: Rollout, allgather: Callable[[Any], list], me: int = 0) -> Judged:
  """Every process's share in process order; `allgather` exchanges each process's summaries and scores exactly
  (multihost.allgather), `me` is this process's index (its responses keep their records)."""
  parts = allgather(Judged([_summary(r) for r in local.records], local.correct))
  responses: list[Response] = []
  for p, part in enumerate(parts):
    records = local.records if p == me else [None] * len(part.responses)
    responses += [s._replace(record=r) for s, r in zip(part.responses, records)]
  return Judged(responses, np.concatenate([np.asarray(part.correct, np.float64) for part in parts]))


def graded(data: Sequence) -> np.ndarray:
  """[n] bool: the responses scored by a test pass rate (code records); the others (math) are right or wrong."""
  return np.asarray([isinstance(d, CodeRecord) for d in data], bool)


def _judge_loop(judge, data: Sequence, max_new: int, inbox: "queue.Queue", scores: np.ndarray, busy: list[float],
                errors: list[BaseException]) -> None:
  """Score (index, record) items from `inbox` in the batches that have piled up, until the end marker."""
  done = False
  while not done:
    batch = [inbox.get()]
    while not inbox.empty():
      batch.append(inbox.get_nowait())
    done = batch[-1] is _END
    batch = [item for item in batch if item is not _END]
    if not batch or errors:
      continue
    start = time.perf_counter()
    try:
      results = judge_responses(judge, [data[i] for i, _ in batch], [r.text for _, r in batch],
                                [r.length for _, r in batch], max_new)
    except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
      errors.append(e)
      continue
    for (i, _), res in zip(batch, results):
      scores[i] = res["pass_rate"]
    busy[0] += time.perf_counter() - start


def decode_and_judge(decoder, params, prompts: Sequence[Sequence[int]], data: Sequence, judge, seed: int,
                     on_progress: Callable[[dict], None] | None = None,
                     stream_ids: Sequence[int] | None = None) -> Rollout:
  """Decode `prompts` (prompt i on stream `stream_ids[i]`, default i, of `seed`) and judge every record against
  `data[i]` while decoding."""
  n = len(prompts)
  if n == 0:
    return Rollout([], np.zeros(0, np.float64), {"time_decode": 0.0, "time_judge": 0.0, "time_judge_wait": 0.0,
                                                 "judge_overlap": 1.0})
  records: list[Record | None] = [None] * n
  scores = np.zeros(n, np.float64)
  inbox: queue.Queue = queue.Queue()
  busy, errors = [0.0], []
  worker = threading.Thread(target=_judge_loop, args=(judge, data, decoder.dcfg.max_new_tokens, inbox, scores, busy,
                                                      errors), daemon=True)
  worker.start()
  start = time.perf_counter()
  try:
    for i, record in decoder.stream(params, prompts, seed=seed, stream_ids=stream_ids, with_logprobs=True,
                                    on_progress=on_progress):
      records[i] = record
      inbox.put((i, record))
  finally:
    inbox.put(_END)
    decoded = time.perf_counter()
    worker.join()
  if errors:
    raise errors[0]
  waited = time.perf_counter() - decoded
  timings = {"time_decode": decoded - start, "time_judge": busy[0], "time_judge_wait": waited,
             "judge_overlap": 1.0 - waited / busy[0] if busy[0] > 0 else 1.0}
  return Rollout(records, scores, timings)
