"""Train-step benchmark: one GRPO update (micro_grads + AdamW apply) in tokens/s and MFU, against plain PyTorch.

The reference writes the SPEC §7.4 loss out plainly on transformers' Qwen3 with the same weights, the same
[noisy | clean] layout and an explicit 4D additive mask (SPEC §3), float32 on CPU. One warm-up step each (JAX:
compilation; these first-step losses must agree), then timed steps of the two alternate and the median is reported.
"""

from __future__ import annotations

import os
import statistics
import time
import types
import warnings

import jax
import numpy as np
from absl import flags

from lrl_jax import cli
from lrl_jax.bench import shapes
from lrl_jax.errors import UserError
from lrl_jax.decode.config import DTYPES
from lrl_jax.model import ModelConfig, init_params
from lrl_jax.model.remat import POLICIES
from lrl_jax.rl import losses, optim, rows as rows_lib, step as step_lib

PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("A100", 312e12))
LR = 1e-6
LOSS_TOLERANCE = 1e-4  # float32 on CPU: JAX and PyTorch first-step losses


PROG = "python -m lrl_jax.bench train"


def define_flags(fv: flags.FlagValues) -> None:
  shapes.define_shape_flags(fv)
  flags.DEFINE_integer("rows", 4, "micro-batch rows (one micro-batch per update)", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seq", 256, "row length L; the [noisy | clean] layout processes 2L", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("block_size", 32, "block size", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("steps", 3, "timed updates per implementation (median reported)", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_enum("dtype", None, list(DTYPES), "JAX compute dtype; default: bfloat16 on GPU, else "
                    "float32 (master weights float32)", flag_values=fv)
  flags.DEFINE_enum("remat", "none", list(POLICIES), "rematerialisation policy", flag_values=fv)
  flags.DEFINE_integer("q_chunk", 0, "attention query chunk (0: whole rows)", lower_bound=0, flag_values=fv)
  flags.DEFINE_float("peak_flops", None, "peak FLOP/s for the MFU (default: bf16 dense peak of the GPU)",
                     flag_values=fv)
  flags.DEFINE_integer("seed", 0, "weights and rows seed", flag_values=fv)
  flags.DEFINE_bool("torch", False, "run the PyTorch reference on a GPU host too", flag_values=fv)
  flags.DEFINE_bool("no_torch", False, "skip the PyTorch reference", flag_values=fv)


def _args(fv: flags.FlagValues) -> types.SimpleNamespace:
  """The flags as attributes; --torch with --no_torch is a UserError."""
  args = cli.namespace(fv)
  if args.torch and args.no_torch:
    raise UserError("--torch: cannot be combined with --no_torch")
  return args


def synthetic_rows(cfg: ModelConfig, rows: int, seq: int, seed: int):
  """(RowBatch, advantages [rows], correct [rows]) of random block_masked rows, one sequence per row.

  Each row: a prompt of seq/8..seq/4 tokens, a total length of 3/4..1 of seq (the rest is padding) and a random
  stop, so only the first half or more of the response is scored. Tokens never hit the mask id (vocab - 1).
  """
  rng = np.random.default_rng(seed)
  seq_rows, tokens = [], []
  for _ in range(rows):
    prompt = int(rng.integers(seq // 8, seq // 4 + 1))
    response = int(rng.integers(3 * seq // 4, seq + 1)) - prompt
    stop = int(rng.integers(max(1, response // 2), response + 1))
    seq_rows.append(rows_lib.block_masked_rows(prompt, response, stop))
    tokens.append(rng.integers(0, cfg.vocab_size - 1, prompt + response).astype(np.int32))
  batch = rows_lib.pad_rows(seq_rows, tokens, pad_id=0, num_rows=rows, max_len=seq)
  correct = rng.random(rows) < 0.5
  correct[0] = True
  return batch, rng.standard_normal(rows).astype(np.float32), correct.astype(np.float32)


def step_flops(cfg: ModelConfig, n_params: int, rows: int, seq: int) -> float:
  """Model FLOPs of one update (forward + backward; rematerialisation not counted), with L' = 2L = 2 * seq:

  6 * P_body * rows * L'  +  6 * vocab * hidden * rows * L  +  12 * layers * heads * head_dim * L'^2 * rows,
  P_body = params less the embedding table and lm_head (a lookup is no matmul); the lm_head runs on the noisy half
  only; attention counts the dense L' x L' scores and values the XLA backend computes, masked entries included.
  """
  head = cfg.vocab_size * cfg.hidden_size
  body = n_params - head * (1 if cfg.tie_word_embeddings else 2)
  long = 2 * seq
  return (6 * body * rows * long + 6 * head * rows * seq
          + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * long ** 2 * rows)


def peak_flops(device_kind: str) -> float | None:
  return next((f for name, f in PEAK_BF16 if name.lower() in device_kind.lower()), None)


class JaxStep:
  """The compiled update: micro_grads on the one micro-batch, then the donating AdamW apply."""

  def __init__(self, params, mb: step_lib.MicroBatch, sc: step_lib.StepConfig):
    optimizer = optim.make_optimizer(lr=LR, warmup_steps=1)
    self.params, self.opt_state, self.mb, self.sc = params, optimizer.init(params), mb, sc
    self.apply = step_lib.make_apply(optimizer)

  def __call__(self) -> tuple[float, float]:
    grads, aux = step_lib.micro_grads(self.params, self.mb, sc=self.sc)
    self.params, self.opt_state, norm = self.apply(self.params, self.opt_state, grads)
    jax.block_until_ready(self.params)
    return float(aux["loss"]), float(norm)

  def compiled(self) -> tuple[int, int]:
    return step_lib.micro_grads._cache_size(), self.apply._cache_size()


def torch_loss(model, b: dict, cfg: ModelConfig, block_size: int, lc: losses.LossConfig):
  """SPEC §7.4 loss written plainly (one sequence per row): asymmetric clipped surrogate, k3 KL, NLL on correct."""
  import torch
  tokens, valid, scored = b["tokens"], b["valid"], b["scored"]
  rows, length = tokens.shape
  ids = torch.cat([torch.where(b["noisy_masked"], cfg.mask_token_id, tokens), tokens], 1)
  pos = torch.arange(length).expand(rows, length)
  positions = torch.cat([pos, pos], 1)
  noisy = torch.cat([torch.ones_like(valid), torch.zeros_like(valid)], 1)
  qb, kb = (positions // block_size)[:, :, None], (positions // block_size)[:, None, :]
  qn, kn = noisy[:, :, None], noisy[:, None, :]
  allowed = torch.where(qn, (kn & (kb == qb)) | (~kn & (kb < qb)), ~kn & (kb <= qb))
  allowed = (allowed & torch.cat([valid, valid], 1)[:, None, :]) | torch.eye(2 * length, dtype=torch.bool)
  mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]  # pad queries see only themselves
  hidden = model.model(input_ids=ids, position_ids=positions, attention_mask=mask).last_hidden_state
  logits = model.lm_head(hidden[:, :length]).float()  # read at the noisy positions
  banned = torch.arange(cfg.vocab_size) == cfg.mask_token_id
  logp = torch.log_softmax(logits.masked_fill(banned, -torch.inf), -1).gather(-1, tokens[..., None])[..., 0]
  logp = torch.where(scored, logp, 0.0)
  logp_old, logp_ref = torch.where(scored, b["logp_old"], 0.0), torch.where(scored, b["logp_ref"], 0.0)
  m = scored.float()
  adv = b["advantages"][:, None]
  ratio = torch.exp(torch.clamp(logp - logp_old, -10, 10))
  high = torch.where(adv >= 0, 1 + lc.eps_high, 1 + lc.eps)
  surrogate = torch.minimum(ratio * adv, torch.minimum(torch.clamp(ratio, min=1 - lc.eps), high) * adv)
  d = logp - logp_ref
  kl = torch.exp(torch.clamp(-d, -10, 10)) - 1 + d

  def mean(x, w, mode):
    if mode == "token":
      return (x * w).sum() / w.sum().clamp(min=1)
    per_seq = (x * w).sum(1) / w.sum(1).clamp(min=1)
    return per_seq[w.sum(1) > 0].mean()

  nll_mask = m * b["correct"][:, None]
  return (-mean(surrogate, m, lc.policy_reduction) + lc.kl_beta * mean(kl, m, lc.kl_reduction)
          + lc.nll_loss_weight * mean(-logp, nll_mask, lc.nll_reduction))


class TorchStep:
  """The same update in PyTorch float32 on CPU: loss.backward(), global-norm clip 1.0, torch.optim.AdamW."""

  def __init__(self, params, cfg: ModelConfig, batch: dict, block_size: int, lc: losses.LossConfig):
    import torch
    from lrl_jax.bench.torch_decode import hf_model
    self.model = hf_model(params, cfg, torch.float32, "cpu")
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    self.batch = {k: torch.from_numpy(np.asarray(v).copy()) for k, v in batch.items()}
    self.batch["tokens"] = self.batch["tokens"].long()
    self.cfg, self.block_size, self.lc = cfg, block_size, lc

  def __call__(self) -> tuple[float, float]:
    import torch
    self.opt.zero_grad(set_to_none=True)
    loss = torch_loss(self.model, self.batch, self.cfg, self.block_size, self.lc)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()
    return loss.item(), norm.item()


def _threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def run(args: types.SimpleNamespace) -> int:
  cfg = shapes.model_config(args)
  on_gpu = jax.default_backend() == "gpu"
  dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
  use_torch = not args.no_torch and (args.torch or not on_gpu)
  loss_cfg = losses.LossConfig()
  sc = step_lib.StepConfig(cfg, loss_cfg, args.block_size, dtype, args.remat, args.q_chunk)
  params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(args.seed))  # one compile, not one per leaf
  b, advantages, correct = synthetic_rows(cfg, args.rows, args.seq, args.seed)
  logp_old = np.asarray(step_lib.logprobs(params, b.tokens, b.noisy_masked, b.valid, sc=sc))
  w = losses.loss_weights(b.scored, b.row_to_seq, correct, loss_cfg)
  fields = dict(tokens=b.tokens, noisy_masked=b.noisy_masked, valid=b.valid, scored=b.scored, advantages=advantages,
                logp_old=logp_old, logp_ref=logp_old)
  mb = jax.device_put(step_lib.MicroBatch(**fields, w_policy=w.policy, w_kl=w.kl, w_nll=w.nll))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  threads = _threads()
  steps = {"jax": JaxStep(params, mb, sc)}
  if use_torch:  # copies `params` before the first JAX apply donates them
    import torch
    torch.set_num_threads(threads)
    steps["torch"] = TorchStep(params, cfg, {**fields, "correct": correct}, args.block_size, loss_cfg)
  name = shapes.shape_name(args)
  scored = int(b.scored.sum())
  print(f"train bench: {name} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, heads {cfg.num_heads}/"
        f"{cfg.num_kv_heads}x{cfg.head_dim}, intermediate {cfg.intermediate_size}, vocab {cfg.vocab_size}; "
        f"{n_params / 1e6:.1f}M params), random weights; one GRPO update = micro_grads + AdamW apply on {args.rows} "
        f"block_masked rows x L={args.seq} (layout 2L={2 * args.seq}), {scored} scored tokens, block "
        f"{args.block_size}; JAX {dtype} compute on float32 master weights, remat {args.remat}, q_chunk "
        f"{args.q_chunk or 'off'}")
  print(f"device: JAX {jax.default_backend()} ({jax.devices()[0].device_kind}); PyTorch "
        + (f"float32 on CPU, torch.set_num_threads({threads}) = XLA's {threads} cores" if use_torch else
           "reference skipped (a GPU host runs it only with --torch: CPU PyTorch at SDAR-1.7B shape is too slow)")
        + f"; median of {args.steps} alternating steps after 1 warm-up each; load average {os.getloadavg()[0]:.2f}")
  first = {k: step() for k, step in steps.items()}  # warm-up; JAX compiles here
  compiled_before = steps["jax"].compiled()
  times = {k: [] for k in steps}
  for _ in range(args.steps):
    for k, step in steps.items():
      times[k].append(_timed(step))
  compiled_after = steps["jax"].compiled()
  print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on these cores distort the timings)")
  print(f"compiled programs (micro_grads, apply): {compiled_before} before the timed steps, {compiled_after} after")
  if compiled_after != compiled_before:
    raise RuntimeError(f"the update recompiled after the first step: {compiled_before} -> {compiled_after}")
  step_flop = step_flops(cfg, n_params, args.rows, args.seq)
  peak = args.peak_flops or (peak_flops(jax.devices()[0].device_kind) if on_gpu else None)
  print("| impl | step ms | tokens/s | scored tokens/s | MFU |")
  print("| --- | --- | --- | --- | --- |")
  rate = {}
  for k, ts in times.items():
    sec = statistics.median(ts)
    rate[k] = args.rows * 2 * args.seq / sec
    mfu = f"{100 * step_flop / sec / peak:.1f}%" if peak and k == "jax" else "-"
    print(f"| {k} | {1e3 * sec:.1f} | {rate[k]:.0f} | {scored / sec:.0f} | {mfu} |")
  print(f"tokens/s = trained tokens: rows x 2L positions the model processes per update; scored tokens/s counts the "
        f"tokens whose log-prob is trained. model FLOPs per update {step_flop:.3e}"
        + (f"; MFU against a {peak:.3g} FLOP/s peak" if peak else "; no MFU (no GPU peak; --peak_flops sets one)"))
  if not use_torch:
    return 0
  (jl, jn), (tl, tn) = first["jax"], first["torch"]
  print(f"JAX/PyTorch tokens/s ratio {rate['jax'] / rate['torch']:.2f}x; first-step loss JAX {jl:.6f} PyTorch "
        f"{tl:.6f} |Δ| {abs(jl - tl):.1e}; grad norm JAX {jn:.6f} PyTorch {tn:.6f}")
  if not on_gpu and dtype == "float32" and not abs(jl - tl) <= LOSS_TOLERANCE:
    print(f"FAIL: first-step losses differ by more than {LOSS_TOLERANCE}")
    return 1
  return 0


def main(argv: list[str]) -> int:
  def body(fv):
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # SDAR-1.7B updates need most of an H100
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="Some donated buffers were not usable")  # CPU cannot donate
      return run(_args(fv))

  return cli.run(define_flags, body, argv, PROG, __doc__)
