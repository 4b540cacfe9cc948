"""Host side of decoding: bucketed shapes, per-sequence random streams, and the rollout records of SPEC §5.

Shapes are bucketed (prompt length to a power-of-two multiple of the block, batch to a fixed size, max new tokens
fixed per Decoder), so repeated calls reuse one compiled program; the KV cache of each bucket is kept and donated.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrl_jax.decode import engine
from lrl_jax.decode.config import DecodeConfig, DecodeError
from lrl_jax.model.config import ModelConfig


def prompt_bucket(length: int, block_size: int) -> int:
  """Smallest power-of-two number of blocks that holds `length` tokens."""
  blocks = max(1, -(-length // block_size))
  return (1 << (blocks - 1).bit_length()) * block_size


def first_stop(ids: np.ndarray, stop_ids: Sequence[int]) -> int | None:
  """Index of the first stop id in ids, or None."""
  hits = np.flatnonzero(np.isin(ids, list(stop_ids))) if stop_ids else []
  return int(hits[0]) if len(hits) else None


def make_record(prompt: Sequence[int], out: dict[str, np.ndarray], row: int, dcfg: DecodeConfig,
                tokenizer=None, with_logprobs: bool = False) -> dict[str, Any]:
  """The SPEC §5 record of one row of the engine output."""
  p = len(prompt)
  decoded_end = (int(out["block"][row]) + 1) * dcfg.block_size
  decoded = out["tokens"][row, p:decoded_end]
  decoded_steps = out["step_map"][row, p:decoded_end]
  limit = min(dcfg.max_new_tokens, len(decoded))
  stop = first_stop(decoded[:limit], dcfg.stop_ids)
  length = limit if stop is None else stop + 1
  response, steps = decoded[:length], decoded_steps[:length]
  record = {
      "prompt_ids": [int(t) for t in prompt],
      "response_ids": response.tolist(),
      "step_map": steps.tolist(),
      "num_forwards": int(len(np.unique(steps))),
      "forwards_total": int(out["nf"][row] + out["commits"][row]),
      "truncated": stop is None,
      "decoded_ids": decoded.tolist(),
      "decoded_step_map": decoded_steps.tolist(),
  }
  if tokenizer is not None:
    record["text"] = tokenizer.decode(record["response_ids"], skip_special_tokens=True)
  if with_logprobs:
    record["logprobs"] = out["logp"][row, p:p + length].tolist()
  return record


# Built by jit so a fresh cache is placed exactly like the cache `engine.decode` returns: both hit one compiled program.
_fresh_cache = jax.jit(engine.init_cache, static_argnums=(0, 1, 2, 3))


class Decoder:
  """Generates rollout records for a model; holds one compiled program and KV cache per prompt bucket."""

  def __init__(self, cfg: ModelConfig, dcfg: DecodeConfig, batch_size: int = 8, tokenizer=None):
    dcfg.validate().check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)
    if dcfg.attn_impl == "pallas":
      importlib.import_module("lrl_jax.decode.pallas_attention")  # registers the "pallas" attention backend
    if dcfg.attn_impl == "auto" and jax.default_backend() != "gpu":
      dcfg = dataclasses.replace(dcfg, attn_impl="xla")
    self.cfg, self.dcfg, self.batch_size, self.tokenizer = cfg, dcfg, batch_size, tokenizer
    self._caches: dict[int, dict] = {}
    self.decode_seconds = 0.0

  def _check_prompt(self, i: int, prompt: Sequence[int]) -> None:
    if len(prompt) == 0:
      raise DecodeError(f"prompt {i} is empty")
    limit = self.cfg.max_position_embeddings
    if len(prompt) + self.dcfg.max_new_tokens > limit:
      raise DecodeError(f"prompt {i} has {len(prompt)} tokens; with max_new_tokens={self.dcfg.max_new_tokens} "
                        f"it exceeds the model's max_position_embeddings={limit}")
    bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
    if bad:
      raise DecodeError(f"prompt {i} has token id {bad[0]} outside the vocabulary (size {self.cfg.vocab_size})")

  def _choose_attention(self, params, prompts) -> None:
    """attn_impl="auto" on a GPU: time decoding the first batch with each backend and keep the faster (once)."""
    if self.dcfg.attn_impl != "auto":
      return
    from lrl_jax.decode import pallas_attention

    batch, seconds = prompts[:self.batch_size], self.decode_seconds

    def run(impl):
      dcfg = dataclasses.replace(self.dcfg, attn_impl=impl)
      return lambda: self._run_batch(params, batch, jax.random.key(0), range(len(batch)), False, dcfg)

    best = pallas_attention.choose_backend(run("xla"), run("pallas"))
    self.dcfg = dataclasses.replace(self.dcfg, attn_impl=best)
    self.decode_seconds = seconds

  def generate(self, params, prompts: Sequence[Sequence[int]], seed: int = 0,
               stream_ids: Sequence[int] | None = None, with_logprobs: bool = False,
               progress: Iterable | None = None) -> list[dict[str, Any]]:
    """One record per prompt. Prompt i samples from stream `stream_ids[i]` (default i) of `seed`."""
    for i, prompt in enumerate(prompts):
      self._check_prompt(i, prompt)
    self._choose_attention(params, prompts)
    stream_ids = list(range(len(prompts))) if stream_ids is None else list(stream_ids)
    base = jax.random.key(seed)
    records: list[dict[str, Any]] = []
    for lo in range(0, len(prompts), self.batch_size):
      chunk = prompts[lo:lo + self.batch_size]
      records.extend(self._run_batch(params, chunk, base, stream_ids[lo:lo + self.batch_size], with_logprobs))
      if progress is not None:
        progress.update(len(chunk))
    return records

  def _run_batch(self, params, prompts, base_key, stream_ids, with_logprobs, dcfg=None):
    b, bs = self.batch_size, self.dcfg.block_size
    bucket = prompt_bucket(max(len(p) for p in prompts), bs)
    tokens = np.zeros((b, bucket), np.int32)
    lengths = np.ones((b,), np.int32)
    active = np.zeros((b,), bool)
    for i, prompt in enumerate(prompts):
      tokens[i, :len(prompt)] = prompt
      lengths[i], active[i] = len(prompt), True
    ids = np.zeros((b,), np.uint32)
    ids[:len(prompts)] = list(stream_ids)
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(ids))
    start = time.perf_counter()
    out = jax.device_get(self._decode(params, bucket, tokens, lengths, keys, active, dcfg or self.dcfg))
    self.decode_seconds += time.perf_counter() - start
    return [make_record(prompt, out, i, self.dcfg, self.tokenizer, with_logprobs) for i, prompt in enumerate(prompts)]

  def _decode(self, params, bucket: int, tokens, lengths, keys, active, dcfg=None):
    """One engine call on the bucket's kept (donated) cache, or a fresh one."""
    dcfg = dcfg or self.dcfg
    cache = self._caches.pop(bucket, None)
    if cache is None:
      slots = engine.num_slots(bucket, self.dcfg.max_new_tokens, self.dcfg.block_size)
      cache = _fresh_cache(self.cfg, self.batch_size, slots, jnp.dtype(self.dcfg.dtype))
    out, self._caches[bucket] = engine.decode(params, jnp.asarray(tokens), jnp.asarray(lengths), keys,
                                              jnp.asarray(active), cache, cfg=self.cfg, dcfg=dcfg)
    return out

  def warm_up(self, params, prompts: Sequence[Sequence[int]]) -> None:
    """Compile the program of every prompt bucket `generate(params, prompts)` will use (all rows inactive: the
    loop exits after the prefill), so that timed calls measure decoding only."""
    self._choose_attention(params, prompts)
    b = self.batch_size
    buckets = {prompt_bucket(max(len(p) for p in prompts[lo:lo + b]), self.dcfg.block_size)
               for lo in range(0, len(prompts), b)}
    keys = jax.random.split(jax.random.key(0), b)
    for bucket in sorted(buckets):
      out = self._decode(params, bucket, np.zeros((b, bucket), np.int32), np.ones((b,), np.int32), keys,
                         np.zeros((b,), bool))
      jax.block_until_ready(out)
