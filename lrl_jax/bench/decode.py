"""Decode benchmark: our `Decoder` against a plain PyTorch loop on the same random weights, in the same run.

Both decode the same equal-length random prompts greedily with the same strategy and stop rule; repetitions of the
two alternate (so background load hits both alike) after one warm-up each (JAX: compilation) and the median is
reported. A forward is one batched model call on a block (denoising or commit; the prefill is timed, not counted).
"""

from __future__ import annotations

import os
import statistics
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from lrl_jax import cli
from lrl_jax.bench import shapes
from lrl_jax.decode import DecodedBatch, Decoder, DecodeConfig, STRATEGIES
from lrl_jax.decode.config import ATTN_CHOICES, DTYPES
from lrl_jax.defaults import parse_stop_ids
from lrl_jax.model import init_params

PROG = "python -m lrl_jax.bench decode"


def define_flags(fv: flags.FlagValues) -> None:
  shapes.define_shape_flags(fv)
  flags.DEFINE_list("batch", ["1", "8"], "comma-separated batch sizes", flag_values=fv)
  flags.DEFINE_integer("block_size", 32, "block size", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("steps", None, "denoising steps per block (default: block_size)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("prompt_len", 64, "prompt tokens", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 128, "generated tokens", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("strategy", "low_confidence_dynamic", STRATEGIES, "decoding strategy", flag_values=fv)
  flags.DEFINE_float("threshold", 0.9, "confidence threshold", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_string("stop_ids", "", "comma-separated; default none (random weights: fixed workload)",
                      flag_values=fv)
  flags.DEFINE_integer("reps", 3, "timed repetitions per engine (median reported)", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("dtype", None, list(DTYPES), "default: bfloat16 on GPU, else float32", flag_values=fv)
  flags.DEFINE_enum("attn_impl", "auto", list(ATTN_CHOICES), "auto: the Decoder times both on GPU during "
                    "the warm-up run (xla elsewhere)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "weights and prompts seed", flag_values=fv)
  flags.DEFINE_bool("no_torch", False, "skip the PyTorch reference", flag_values=fv)


def jax_calls(records: DecodedBatch, prompt_len: int, block_size: int) -> int:
  """Batched model calls of the engine, from the trajectories: equal-length prompts decode their blocks in
  lockstep, so a block costs the most denoising forwards any row spent on it, plus one commit between blocks."""
  per_block: dict[int, int] = {}
  for r in records:
    steps = r.decoded_step_map
    blocks = (np.arange(len(steps)) + prompt_len) // block_size
    for k in np.unique(blocks):
      per_block[k] = max(per_block.get(k, 0), len(np.unique(steps[blocks == k])))
  return sum(per_block.values()) + len(per_block) - 1


def match_rate(a: list[list[int]], b: list[list[int]]) -> tuple[int, int]:
  """(positions equal, positions compared): a length difference counts as mismatches."""
  same = sum(int(np.sum(np.asarray(x[:len(y)]) == np.asarray(y[:len(x)]))) for x, y in zip(a, b))
  return same, sum(max(len(x), len(y)) for x, y in zip(a, b))


def hbm_floor(params) -> tuple[float, float]:
  """(weight bytes, copy bandwidth in bytes/s of a ~1 GiB on-device `x + 1`, read + written)."""
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  x = jnp.zeros((2**28,), jnp.float32)
  add = jax.jit(lambda v: v + 1)
  jax.block_until_ready(add(x))
  seconds = []
  for _ in range(10):
    start = time.perf_counter()
    jax.block_until_ready(add(x))
    seconds.append(time.perf_counter() - start)
  return weight_bytes, 2 * x.nbytes / statistics.median(seconds)


def _timed(fn):
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def bench_batch(args, cfg, dcfg, params, model, batch: int) -> list[dict]:
  """Rows of the table (jax, then torch) for one batch size, plus the token/step_map agreement."""
  if model is not None:
    from lrl_jax.bench import torch_decode
  rng = np.random.default_rng(args.seed + batch)
  prompts = rng.integers(0, cfg.vocab_size - 1, (batch, args.prompt_len)).astype(np.int64)
  decoder = Decoder(cfg, dcfg, batch_size=batch, max_prompt_len=args.prompt_len)
  run_jax = lambda: decoder.generate(params, prompts.tolist())
  kwargs = dict(block_size=dcfg.block_size, steps=dcfg.num_steps, strategy=dcfg.strategy, threshold=dcfg.threshold,
                max_new_tokens=dcfg.max_new_tokens, stop_ids=dcfg.stop_ids, mask_id=cfg.mask_token_id,
                entropy_budget=dcfg.entropy_budget)
  run_torch = lambda: torch_decode.decode(model, prompts, **kwargs)
  records, ref = run_jax(), (run_torch() if model is not None else None)  # warm-up (JAX: compilation)
  times = {"jax": [], "torch": []}
  for _ in range(args.reps):
    times["jax"].append(_timed(run_jax)[0])
    if model is not None:
      times["torch"].append(_timed(run_torch)[0])
  jax_tokens = [r.response_ids.tolist() for r in records]
  rows = [dict(engine="jax", batch=batch, forwards=jax_calls(records, args.prompt_len, dcfg.block_size),
               tokens=sum(map(len, jax_tokens)), seconds=statistics.median(times["jax"]))]
  if model is not None:
    torch_tokens = torch_decode.responses(ref, args.prompt_len, dcfg.max_new_tokens, dcfg.stop_ids)
    rows.append(dict(engine="torch", batch=batch, forwards=ref["calls"], tokens=sum(map(len, torch_tokens)),
                     seconds=statistics.median(times["torch"])))
    rows[0]["match"] = match_rate(jax_tokens, torch_tokens)
    p = args.prompt_len
    rows[0]["step_match"] = match_rate([r.step_map.tolist() for r in records],
                                       [ref["step_map"][i, p:p + len(t)].tolist() for i, t in enumerate(torch_tokens)])
  return rows


def _threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main(argv: list[str]) -> int:
  return cli.run(define_flags, lambda fv: run(cli.namespace(fv)), argv, PROG, __doc__)


def run(args: types.SimpleNamespace) -> int:
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory for the torch model
  cfg = shapes.model_config(args)
  on_gpu = jax.default_backend() == "gpu"
  dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
  stop_ids = parse_stop_ids(args.stop_ids, "--stop_ids") or ()
  dcfg = DecodeConfig(block_size=args.block_size, steps=args.steps, strategy=args.strategy, threshold=args.threshold,
                      greedy=True, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids, dtype=dtype,
                      attn_impl=args.attn_impl).validate()
  params = init_params(cfg, jax.random.key(args.seed), jnp.dtype(dtype))
  model, threads = None, _threads()
  if not args.no_torch:
    import torch

    from lrl_jax.bench import torch_decode
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch_decode.hf_model(params, cfg, getattr(torch, dtype), device)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  name = shapes.shape_name(args)
  print(f"decode bench: {name} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, heads "
        f"{cfg.num_heads}/{cfg.num_kv_heads}x{cfg.head_dim}, intermediate {cfg.intermediate_size}, vocab "
        f"{cfg.vocab_size}; {n_params / 1e6:.1f}M params, {dtype}), random weights; greedy {dcfg.strategy} "
        f"θ={dcfg.threshold}, block {dcfg.block_size}, steps {dcfg.num_steps}, prompt {args.prompt_len}, "
        f"max_new {dcfg.max_new_tokens}, stop ids {list(stop_ids) or 'none'}")
  print(f"device: JAX {jax.default_backend()} ({jax.devices()[0].device_kind}); {threads} CPU threads for XLA "
        f"(its pool spans the {threads} cores of the affinity mask)"
        f"{f' and torch.set_num_threads({threads})' if model is not None else ''}; "
        f"median of {args.reps} alternating runs after 1 warm-up each; load average {os.getloadavg()[0]:.2f}")
  results = [bench_batch(args, cfg, dcfg, params, model, int(b)) for b in args.batch]
  print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on these cores distort the timings)")
  print("| engine | batch | forwards | tokens | forwards/s | tokens/s | ms/forward |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for r in (row for rows in results for row in rows):
    print(f"| {r['engine']} | {r['batch']} | {r['forwards']} | {r['tokens']} | {r['forwards'] / r['seconds']:.1f} | "
          f"{r['tokens'] / r['seconds']:.1f} | {1e3 * r['seconds'] / r['forwards']:.2f} |")
  for jr, tr in (rows for rows in results if len(rows) == 2):
    (same, total), (steps_same, steps_total) = jr["match"], jr["step_match"]
    ratio = (jr["tokens"] / jr["seconds"]) / (tr["tokens"] / tr["seconds"])
    print(f"batch {jr['batch']}: JAX/PyTorch tokens/s ratio {ratio:.2f}x; greedy tokens match "
          f"{100 * same / total:.1f}% ({same}/{total}), step_map match {100 * steps_same / steps_total:.1f}%")
  if on_gpu:
    weight_bytes, bandwidth = hbm_floor(params)
    floor_ms = 1e3 * weight_bytes / bandwidth
    print(f"HBM floor: {weight_bytes / 1e9:.2f} GB of weights / {bandwidth / 1e9:.0f} GB/s measured copy bandwidth = "
          f"{floor_ms:.2f} ms/forward")
    for r in (rows[0] for rows in results):
      ms = 1e3 * r["seconds"] / r["forwards"]
      print(f"batch {r['batch']}: JAX {ms:.2f} ms/forward = {ms / floor_ms:.2f}x the HBM floor")
  return 0
