"""The decoding API every caller uses (trainer, eval, generate, benchmarks): a `Decoder` over the one engine.

`Decoder.stream` yields typed records as their sequences finish (continuous batching); `Decoder.generate` returns
them in prompt order as one `DecodedBatch` of numpy arrays. Prompt i samples from stream `stream_ids[i]` (default
i) of `seed` and may carry its own budget of new tokens; the same prompt and stream give the same record whatever
slot, neighbours or arrival order it gets.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from lrl_jax.decode import programs, scheduler, slots as slots_lib
from lrl_jax.decode.config import DecodeConfig, DecodeError
from lrl_jax.decode.records import DecodedBatch, Record
from lrl_jax.decode.scheduler import Request
from lrl_jax.model import attention
from lrl_jax.model.config import ModelConfig


def engine_shape(cfg: ModelConfig, dcfg: DecodeConfig, slots: int, max_len: int, pool_tokens: int | None = None,
                 page_size: int | None = None, fuse: bool = False, prefix_chunk: int = 8,
                 shards: int = 1) -> slots_lib.EngineShape:
  """Sizes of an engine: `slots` and `pool_tokens` of KV pages in all (default: every slot full, never
  preempting), split evenly over `shards`; pages of `page_size` positions (default: one block); slot buffers of
  `max_len` positions rounded up to whole blocks."""
  del cfg
  bs = dcfg.block_size
  page_size = page_size or bs
  if page_size % bs:
    raise DecodeError(f"page_size={page_size} must be a multiple of block_size={bs}")
  if slots <= 0 or slots % shards:
    raise DecodeError(f"slots (batch size) = {slots} must be a positive multiple of the {shards} data shards")
  if prefix_chunk <= 0 or prefix_chunk & (prefix_chunk - 1):
    raise DecodeError(f"prefix_chunk={prefix_chunk} must be a power of two")
  max_len = -(-max_len // bs) * bs
  pages = -(-(pool_tokens or slots * max_len) // page_size) // shards
  if pages <= 0:
    raise DecodeError(f"pool_tokens={pool_tokens} must be positive (at least one page per shard)")
  return slots_lib.EngineShape(slots=slots // shards, pages=pages, page_size=page_size, max_len=max_len,
                               window=2 * bs if fuse else bs, prefix_chunk=prefix_chunk, shards=shards)


def prompt_capacity(prompts: Sequence[Sequence[int]]) -> int:
  """`max_prompt_len` for a known set of prompts: the longest, rounded up to a power of two (slots sized by the
  prompts, not the 512-token default: fewer page-table buckets to compile, a smaller pool)."""
  return scheduler.next_pow2(max((len(p) for p in prompts), default=1))


class Decoder:
  """Generates rollout records for a model with `batch_size` slots (split over the data axes of `mesh`, default one
  device). Compiled programs are kept between calls; the slots and KV pool live only while a call decodes (unless
  `keep_state`), and θ is a per-call argument, so one Decoder serves a whole threshold sweep without recompiling."""

  def __init__(self, cfg: ModelConfig, dcfg: DecodeConfig, batch_size: int = 8, tokenizer=None, *,
               max_prompt_len: int = 512, pool_tokens: int | None = None, page_size: int | None = None,
               fuse: bool = False, forwards_per_call: int = 64, mesh=None, keep_state: bool = False):
    dcfg.validate().check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)
    mesh = mesh or programs.default_mesh()
    dcfg = dcfg.for_platform(attention.platform_of(mesh.devices.flat))  # the paged kernel on GPU and TPU
    self.cfg, self.dcfg, self.batch_size, self.tokenizer = cfg, dcfg, batch_size, tokenizer
    self.max_prompt_len = max_prompt_len
    shape = engine_shape(cfg, dcfg, batch_size, max_prompt_len + dcfg.max_new_tokens, pool_tokens, page_size, fuse,
                         shards=programs.shards(mesh))
    self.scheduler = scheduler.Scheduler(cfg, dcfg, shape, mesh, forwards_per_call, keep_state)

  @property
  def decode_seconds(self) -> float:
    return self.scheduler.stats.seconds

  @property
  def stats(self) -> scheduler.RunStats:
    return self.scheduler.stats

  @property
  def resident_bytes(self) -> int:
    """Device bytes the engine holds between calls (0 unless `keep_state`)."""
    return self.scheduler.resident_bytes

  def _requests(self, prompts: Sequence[Sequence[int]], stream_ids, max_new_tokens) -> list[Request]:
    n = len(prompts)
    streams = list(range(n)) if stream_ids is None else [int(s) for s in stream_ids]
    budgets = [self.dcfg.max_new_tokens] * n if max_new_tokens is None else (
        [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens])
    if len(streams) != n or len(budgets) != n:
      raise DecodeError(f"{n} prompts but {len(streams)} stream ids and {len(budgets)} budgets")
    out = []
    for i, (prompt, stream, budget) in enumerate(zip(prompts, streams, budgets)):
      if len(prompt) == 0:
        raise DecodeError(f"prompt {i} is empty")
      bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
      if bad:
        raise DecodeError(f"prompt {i} has token id {bad[0]} outside the vocabulary (size {self.cfg.vocab_size})")
      if not 0 < budget <= self.dcfg.max_new_tokens:
        raise DecodeError(f"prompt {i}: max_new_tokens={budget} must be in [1, {self.dcfg.max_new_tokens}]")
      limit = self.cfg.max_position_embeddings
      if len(prompt) + budget > limit:
        raise DecodeError(f"prompt {i} has {len(prompt)} tokens; with max_new_tokens={budget} it exceeds the "
                          f"model's max_position_embeddings={limit}")
      if len(prompt) > self.max_prompt_len:
        raise DecodeError(f"prompt {i} has {len(prompt)} tokens, more than the decoder's max_prompt_len="
                          f"{self.max_prompt_len}")
      out.append(Request(list(prompt), stream, budget, i))
    return out

  def stream(self, params, prompts: Sequence[Sequence[int]], seed: int = 0, stream_ids: Sequence[int] | None = None,
             with_logprobs: bool = False, max_new_tokens: int | Sequence[int] | None = None,
             on_progress=None, threshold: float | None = None) -> Iterator[scheduler.Finished]:
    """Finished(prompt index, record) as each sequence finishes; θ = `threshold` (default the DecodeConfig's)."""
    if threshold is not None and not 0 <= threshold <= 1:
      raise DecodeError(f"threshold={threshold} must be in [0, 1]")
    requests = self._requests(prompts, stream_ids, max_new_tokens)
    return self.scheduler.run(params, requests, seed, self.tokenizer, with_logprobs, on_progress, threshold)

  def generate(self, params, prompts: Sequence[Sequence[int]], seed: int = 0,
               stream_ids: Sequence[int] | None = None, with_logprobs: bool = False,
               progress: Iterable | None = None, max_new_tokens: int | Sequence[int] | None = None,
               threshold: float | None = None) -> DecodedBatch:
    """The records of every prompt, in prompt order; `progress` (a tqdm bar) is advanced per finished record."""
    records: list[Record | None] = [None] * len(prompts)
    for i, record in self.stream(params, prompts, seed, stream_ids, with_logprobs, max_new_tokens,
                                 threshold=threshold):
      records[i] = record
      if progress is not None:
        progress.update(1)
    return DecodedBatch.stack(records)

  def warm_up(self, params, prompts: Sequence[Sequence[int]] = ()) -> None:
    """Compile every engine program a run can use, so timed calls measure decoding only."""
    del prompts
    self.scheduler.warm_up(params)


__all__ = ["Decoder", "DecodedBatch", "Record", "engine_shape", "prompt_capacity"]
