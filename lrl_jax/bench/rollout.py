"""Rollout benchmark: continuous batching against static batches, on a long-tailed workload, in one run.

Workload (`--lengths=budget`): random-weight model, equal-length random prompts, greedy, per-request budgets of new
tokens drawn log-normal (median `--median`, sigma `--sigma`, clipped to [1, max_new_tokens]); no stop ids, so every
sequence decodes exactly its budget and every engine does the same useful work.
Workload (`--lengths=stop`, what RL runs): prompts of `--prompt_min`..`--prompt_len` random tokens, sampling at
`--temperature`, every request with max_new_tokens; lengths come from the model's own stop tokens (the last
`--stop_tokens` ids before the mask id: a random model's near-uniform distribution stops ~stop_tokens/vocab of its
tokens, so lengths are long-tailed with a mean near vocab/stop_tokens). Engines, each timed after a warm-up that
compiles it:
  static   the pre-engine behaviour, emulated with the same programs: batches of `--batch` requests, the next batch
           only when the whole batch is done, every row decoding the batch's longest budget (the old engine had one
           max_new_tokens per batch); only each request's own budget counts as useful tokens;
  engine   continuous batching: `--batch` slots refilled as sequences finish, each with its own budget;
  fused    the engine with commit fusion (one call commits block k and takes block k+1's first step);
  engine_xla  the engine with the XLA page walk whatever `--attn_impl` says (on a GPU: the walk against the kernel);
  torch    the PyTorch reference loop (`bench/torch_decode.py`) on static batches like `static`;
  dense    an independent dense static loop (`bench/dense_loop.py`): fixed batches of `--batch`, a dense KV cache,
           each batch runs until every row stopped (the pre-engine decoder); its records must equal the engine's.
With `--repeats=N` every engine runs N times in interleaved rounds and the run of median seconds is reported.
Printed: tokens/s, ms per batched forward, forwards, the tail (share of wall time in forwards where fewer than
half of the slots did work: the last long sequences running alone, which bounds any engine), useful fraction of
slot-forwards (the slot-forwards that did work in `engine`, i.e. what the
workload needs, over the slot-forwards each engine computed), model calls, KV pages at the peak against the tokens held, and
ms per denoising forward with 64 cached positions at two slot capacities (the page walk reads what is filled).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from lrl_jax import cli
from lrl_jax.bench import shapes
from lrl_jax.decode import DecodedBatch, Decoder, DecodeConfig
from lrl_jax.decode.config import ATTN_CHOICES, DTYPES
from lrl_jax.errors import UserError
from lrl_jax.model import PagedKV, forward, init_params

PROG = "python -m lrl_jax.bench rollout"


def define_flags(fv: flags.FlagValues) -> None:
  shapes.define_shape_flags(fv)
  flags.DEFINE_integer("batch", 8, "slots (engine) / batch size (static, torch)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("requests", 32, "sequences in the workload", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("block_size", 32, "block size", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("prompt_len", 64, "prompt tokens", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 512, "budget cap", lower_bound=1, flag_values=fv)
  flags.DEFINE_float("median", 96.0, "median budget of the log-normal", lower_bound=1.0, flag_values=fv)
  flags.DEFINE_float("sigma", 1.0, "sigma of the log-normal", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("threshold", 0.9, "confidence threshold", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_integer("pool_tokens", 0, "engine KV pool in tokens (0: every slot full)", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer("forwards_per_call", 32, "engine forwards per call", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("dtype", None, list(DTYPES), "default: bfloat16 on GPU, else float32", flag_values=fv)
  flags.DEFINE_enum("attn_impl", "auto", list(ATTN_CHOICES), "auto: pallas on GPU, xla elsewhere",
                    flag_values=fv)
  flags.DEFINE_list("engines", ["static", "engine", "fused", "torch"], "which to run", flag_values=fv)
  flags.DEFINE_integer("repeats", 1, "runs of each engine, interleaved in rounds; the run of median seconds is "
                       "reported (on shared cores, a slow spell then hits every engine alike)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "weights, prompts and budgets seed", flag_values=fv)
  flags.DEFINE_enum("lengths", "budget", ["budget", "stop"], "budget: log-normal budgets, greedy; stop: the model's "
                    "own stop tokens end sequences, sampled at --temperature", flag_values=fv)
  flags.DEFINE_integer("prompt_min", 4, "shortest prompt (--lengths=stop; the longest is --prompt_len)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("temperature", 1.0, "sampling temperature (--lengths=stop)", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_integer("stop_tokens", 80, "stop ids (--lengths=stop): the last N ids before the mask id", lower_bound=1,
                       flag_values=fv)


def budgets(args) -> list[int]:
  rng = np.random.default_rng(args.seed)
  draws = np.exp(np.log(args.median) + args.sigma * rng.standard_normal(args.requests))
  return np.clip(np.round(draws), 1, args.max_new_tokens).astype(int).tolist()


def _decoder(cfg, dcfg, args, fuse=False):
  return Decoder(cfg, dcfg, batch_size=args.batch, max_prompt_len=args.prompt_len, pool_tokens=args.pool_tokens or None,
                 fuse=fuse, forwards_per_call=args.forwards_per_call)


def run_engine(cfg, dcfg, params, prompts, budget, args, fuse=False) -> dict:
  dec = _decoder(cfg, dcfg, args, fuse)
  dec.warm_up(params)
  dec.generate(params, prompts[:args.batch], max_new_tokens=budget and budget[:args.batch])  # first use of programs
  dec.scheduler.stats = type(dec.stats)()
  records, calls = [None] * len(prompts), Tail(dec.stats)
  start = time.perf_counter()
  for i, record in dec.stream(params, prompts, max_new_tokens=budget, on_progress=calls.update):
    records[i] = record
  seconds = time.perf_counter() - start
  st, records = dec.stats, DecodedBatch.stack(records)
  return dict(seconds=seconds, tokens=int(records.length.sum()), busy=st.busy, rows=st.rows,
              calls=st.forwards, tail=calls.seconds / seconds, peak_pages=st.peak_pages,
              held=st.peak_tokens_held, page=dec.scheduler.shape.page_size, records=records)


class Tail:
  """Wall seconds of the engine calls in which fewer than half of the slot-forwards did work (`on_progress` hook)."""

  def __init__(self, stats):
    self.stats, self.seconds, self._last = stats, 0.0, (0.0, 0, 0)

  def update(self, progress: dict) -> None:
    seconds, rows, busy = progress["seconds"], self.stats.rows, self.stats.busy
    if 2 * (busy - self._last[2]) < rows - self._last[1]:
      self.seconds += seconds - self._last[0]
    self._last = (seconds, rows, busy)


def run_dense(cfg, dcfg, params, prompts, args) -> dict:
  """The independent dense static loop (`bench/dense_loop.py`), warmed up on one batch first."""
  from lrl_jax.bench import dense_loop
  dense_loop.decode(params, cfg, dcfg, prompts[:args.batch], args.batch, prompt_cols=args.prompt_len)
  records, st = dense_loop.decode(params, cfg, dcfg, prompts, args.batch, prompt_cols=args.prompt_len)
  return dict(seconds=st.seconds, tokens=int(records.length.sum()), busy=st.busy, rows=st.rows,
              calls=st.forwards, tail=st.tail / max(st.forwards, 1), peak_pages=0,
              held=0, page=0, records=records)


def run_static(cfg, dcfg, params, prompts, budget, args) -> dict:
  """Batches run to their longest budget before the next starts; each request counts only its own budget."""
  dec = _decoder(cfg, dcfg, args)
  dec.warm_up(params)
  dec.generate(params, prompts[:args.batch])
  dec.scheduler.stats = type(dec.stats)()
  start = time.perf_counter()
  for lo in range(0, len(prompts), args.batch):
    part = prompts[lo:lo + args.batch]
    dec.generate(params, part, max_new_tokens=[max(budget[lo:lo + args.batch])] * len(part))
  seconds = time.perf_counter() - start
  st = dec.stats
  return dict(seconds=seconds, tokens=sum(budget), rows=st.rows, calls=st.forwards, peak_pages=st.peak_pages,
              held=st.peak_tokens_held, page=dec.scheduler.shape.page_size)


def run_torch(cfg, dcfg, params, prompts, budget, args) -> dict:
  import torch

  from lrl_jax.bench import torch_decode
  model = torch_decode.hf_model(params, cfg, getattr(torch, dcfg.dtype),
                                "cuda" if torch.cuda.is_available() else "cpu")
  kwargs = dict(block_size=dcfg.block_size, steps=dcfg.num_steps, strategy=dcfg.strategy, threshold=dcfg.threshold,
                stop_ids=(), mask_id=cfg.mask_token_id, entropy_budget=dcfg.entropy_budget)
  batch = lambda lo: np.asarray(prompts[lo:lo + args.batch], np.int64)
  torch_decode.decode(model, batch(0), max_new_tokens=args.block_size, **kwargs)  # warm-up
  start, tokens, calls = time.perf_counter(), 0, 0
  for lo in range(0, len(prompts), args.batch):
    need = budget[lo:lo + args.batch]
    out = torch_decode.decode(model, batch(lo), max_new_tokens=max(need), **kwargs)
    tokens, calls = tokens + sum(need), calls + out["calls"]
  return dict(seconds=time.perf_counter() - start, tokens=tokens, rows=calls * args.batch, calls=calls,
              peak_pages=0, held=0, page=0)


def forward_ms(cfg, dcfg, params, capacity: int, filled: int = 64, batch: int = 8, reps: int = 5) -> float:
  """Median ms of one denoising forward (a block against `filled` cached positions of each row) when each slot can
  hold `capacity` positions: the engine gathers the page-table bucket of what is filled, whatever the capacity."""
  page = dcfg.block_size
  slot_pages = -(-capacity // page)
  pool = jnp.zeros((cfg.num_layers, batch * slot_pages, page, cfg.num_kv_heads, cfg.head_dim), jnp.dtype(dcfg.dtype))
  dec = Decoder(cfg, dataclasses.replace(dcfg, max_new_tokens=capacity), batch_size=1, max_prompt_len=1)
  bucket = dec.scheduler._bucket(-(-filled // page))
  table = (jnp.arange(batch)[:, None] * slot_pages + jnp.arange(bucket)[None]).astype(jnp.int32)
  prefix = PagedKV(pool, pool, table, jnp.full((batch,), filled, jnp.int32))
  pos = filled + jnp.arange(dcfg.block_size)[None].repeat(batch, 0)
  tokens = jnp.zeros_like(pos)
  call = jax.jit(lambda p, t, x: forward(p, cfg, t, pos, dtype=jnp.dtype(dcfg.dtype), attn_impl=dcfg.attn_impl,
                                         prefix=x)[0])
  jax.block_until_ready(call(params, tokens, prefix))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(call(params, tokens, prefix))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def median_run(runs: list[dict]) -> dict:
  """The run of median seconds (the lower middle one for an even count)."""
  return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def workload(args, cfg):
  """(prompts, budgets or None, stop ids, description) of the chosen `--lengths` mode."""
  rng = np.random.default_rng(args.seed + 1)
  if args.lengths == "budget":
    prompts = rng.integers(0, cfg.vocab_size - 1, (args.requests, args.prompt_len)).tolist()
    budget = budgets(args)
    return prompts, budget, (), (
        f"greedy θ={args.threshold}; prompt {args.prompt_len}, budgets log-normal(median {args.median:g}, "
        f"σ {args.sigma:g}) clipped to [1, {args.max_new_tokens}]: min {min(budget)}, median "
        f"{int(np.median(budget))}, max {max(budget)}, total {sum(budget)}")
  if not 1 <= args.prompt_min <= args.prompt_len:
    raise UserError(f"--prompt_min={args.prompt_min} must be between 1 and --prompt_len={args.prompt_len}")
  if args.stop_tokens >= cfg.vocab_size - 1:
    raise UserError(f"--stop_tokens={args.stop_tokens} must be below the vocabulary size minus one "
                    f"({cfg.vocab_size - 1})")
  lengths = rng.integers(args.prompt_min, args.prompt_len + 1, args.requests)
  prompts = [rng.integers(0, cfg.vocab_size - 1 - args.stop_tokens, n).tolist() for n in lengths]
  stops = tuple(range(cfg.vocab_size - 1 - args.stop_tokens, cfg.vocab_size - 1))
  return prompts, None, stops, (
      f"temperature {args.temperature:g}, θ={args.threshold}; prompts of {args.prompt_min}-{args.prompt_len} "
      f"tokens, up to {args.max_new_tokens} new, ended by the model's own {args.stop_tokens} stop ids")


def print_lengths(records: DecodedBatch) -> None:
  n = records.length
  print(f"response lengths: mean {n.mean():.1f}, median {int(np.median(n))}, max {n.max()}, "
        f"{int(records.truncated.sum())} of {len(n)} ran to max_new_tokens")


def run(args) -> int:
  cfg = shapes.model_config(args)
  on_gpu = jax.default_backend() == "gpu"
  dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
  prompts, budget, stops, described = workload(args, cfg)
  stop_mode = args.lengths == "stop"
  dcfg = DecodeConfig(block_size=args.block_size, threshold=args.threshold, greedy=not stop_mode,
                      temperature=args.temperature, max_new_tokens=args.max_new_tokens, stop_ids=stops, dtype=dtype,
                      attn_impl=args.attn_impl).validate()
  params = init_params(cfg, jax.random.key(args.seed), jnp.dtype(dtype))
  if stop_mode and ({"static", "torch"} & set(args.engines)):
    raise UserError("--lengths=stop: the static and torch engines decode budgets; use --engines among engine, fused, "
                    "dense")
  print(f"rollout bench: {shapes.shape_name(args)} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), {dtype}, "
        f"random weights, block {args.block_size}, {args.requests} requests, {described}; batch/slots {args.batch}")
  print(f"device: {jax.default_backend()} ({jax.devices()[0].device_kind})")
  runners = {"static": lambda: run_static(cfg, dcfg, params, prompts, budget, args),
             "engine": lambda: run_engine(cfg, dcfg, params, prompts, budget, args),
             "fused": lambda: run_engine(cfg, dcfg, params, prompts, budget, args, fuse=True),
             "torch": lambda: run_torch(cfg, dcfg, params, prompts, budget, args),
             "engine_xla": lambda: run_engine(cfg, dataclasses.replace(dcfg, attn_impl="xla"), params, prompts, budget,
                                              args),
             "dense": lambda: run_dense(cfg, dcfg, params, prompts, args)}
  unknown = [e for e in args.engines if e not in runners]
  if unknown:
    raise UserError(f"--engines: unknown engine {unknown[0]!r}; choose from {sorted(runners)}")
  runs = {name: [] for name in args.engines}
  for i in range(args.repeats):  # round-robin, so a slow spell of the machine is shared by every engine
    for name in args.engines:
      runs[name].append(runners[name]())
      r = runs[name][-1]
      print(f"round {i + 1}: {name} {r['seconds']:.2f} s, {r['tokens'] / r['seconds']:.1f} tokens/s, "
            f"{r['calls']} forwards", flush=True)
  results = {name: median_run(r) for name, r in runs.items()}
  needed = results["engine"]["busy"] if "engine" in results else None  # slot-forwards the workload needs
  for r in results.values():
    r["useful"] = needed / r["rows"] if needed is not None else float("nan")
  kv_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize
  if stop_mode:
    print_lengths(next(r["records"] for r in results.values()))
  print("| engine | seconds | tokens | tokens/s | ms / forward | forwards | tail share | useful slot-forwards | "
        "peak KV MB (pages) | KV MB of tokens held |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for name, r in results.items():
    tail = f"{100 * r['tail']:.1f}%" if "tail" in r else "-"
    print(f"| {name} | {r['seconds']:.2f} | {r['tokens']} | {r['tokens'] / r['seconds']:.1f} | "
          f"{1e3 * r['seconds'] / max(r['calls'], 1):.1f} | {r['calls']} | {tail} | {100 * r['useful']:.1f}% | "
          f"{r['peak_pages'] * r['page'] * kv_token / 1e6:.2f} | {r['held'] * kv_token / 1e6:.2f} |")
  if args.repeats > 1:
    for name, r in runs.items():
      seconds = ", ".join(f"{x['seconds']:.2f}" for x in r)
      print(f"{name} seconds per run: {seconds} (median reported)")
  if "engine" in results and "fused" in results:
    same = results["engine"]["records"] == results["fused"]["records"]
    print(f"commit fusion: {results['fused']['calls']} model calls vs {results['engine']['calls']} "
          f"({1 - results['fused']['calls'] / max(results['engine']['calls'], 1):.1%} fewer), records identical: {same}")
  for name in ("engine", "engine_xla"):
    if name in results and "dense" in results:
      print(f"records identical ({name}, dense): {results[name]['records'] == results['dense']['records']}")
  if not stop_mode:
    small, large = forward_ms(cfg, dcfg, params, 256), forward_ms(cfg, dcfg, params, 8192)
    print(f"denoising forward, batch 8, 64 cached positions: {small:.2f} ms at 256-token slots, {large:.2f} ms at "
          f"8192-token slots ({large / small:.2f}x)")
    floor = hbm_floor_ms(params)
    if floor is not None:
      print(f"HBM floor (weights read once per forward at {jax.devices()[0].device_kind}'s bandwidth): "
            f"{floor:.2f} ms; forward / floor: {small / floor:.2f}x")
  tps = {name: r["tokens"] / r["seconds"] for name, r in results.items()}
  for base in ("static", "torch", "dense"):
    for name in ("engine", "engine_xla", "fused"):
      if base in tps and name in tps:
        print(f"{name} / {base} tokens/s: {tps[name] / tps[base]:.2f}x")
  return 0


HBM_TB_S = {"H100": 3.35, "H200": 4.8, "A100": 2.0}  # peak HBM bandwidth (SXM parts), TB/s


def hbm_floor_ms(params) -> float | None:
  """The least a decode forward can take: every weight byte read once at the device's peak bandwidth (None: unknown)."""
  kind = jax.devices()[0].device_kind
  bandwidth = next((tb for name, tb in HBM_TB_S.items() if name in kind), None)
  if bandwidth is None:
    return None
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return 1e3 * weight_bytes / (bandwidth * 1e12)


def main(argv: list[str]) -> int:
  return cli.run(define_flags, lambda fv: run(cli.namespace(fv)), argv, PROG, __doc__)
