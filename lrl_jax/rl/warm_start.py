"""Warm start with SDAR's block-diffusion objective (supervised, before RL).

Rows are prompt + reference response + `<|im_end|>`, padded with `<|endoftext|>` to the end of the block (the
sampler decodes whole blocks, so the tail after the stop is trained too). Each step masks response tokens at a
random per-block rate and trains log p of the masked tokens (SPEC §3 layout). The result is an Orbax model dir.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lrl_jax.rl import guards, layout
from lrl_jax.rl.batch import length_bucket
from lrl_jax.weights.checkpoint import write_orbax_dir

WARM_START_DIR = "warmstart"


def sft_rows(prompts: list[list[int]], responses: list[list[int]], block_size: int, pad_id: int):
  """tokens [n, L], valid [n, L], maskable (response part) [n, L], with L bucketed to whole blocks."""
  seqs = []
  for p, r in zip(prompts, responses):
    total = -(-(len(p) + len(r)) // block_size) * block_size
    seqs.append((p, r + [pad_id] * (total - len(p) - len(r))))
  length = length_bucket(max(len(p) + len(r) for p, r in seqs), block_size)
  tokens = np.full((len(seqs), length), pad_id, np.int32)
  valid = np.zeros((len(seqs), length), bool)
  maskable = np.zeros((len(seqs), length), bool)
  for i, (p, r) in enumerate(seqs):
    tokens[i, :len(p) + len(r)] = p + r
    valid[i, :len(p) + len(r)] = True
    maskable[i, len(p):len(p) + len(r)] = True
  return tokens, valid, maskable


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer", "block_size", "dtype", "max_rate", "start"),
                   donate_argnums=(0, 1))
def sft_step(params, opt_state, key, tokens, valid, maskable, *, cfg, optimizer, block_size, dtype, max_rate,
             start=0):
  """One optimizer step on the masked-token NLL (mean over masked tokens); `start`: layout.noisy_start."""
  noisy = layout.random_block_masks(key, maskable, block_size, max_rate)

  def loss_fn(p):
    total, count = layout.masked_lm_loss(p, cfg, tokens, noisy, valid, noisy, block_size=block_size,
                                         dtype=jnp.dtype(dtype), start=start)
    return total / jnp.maximum(count, 1)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def run_sft(config, cfg, params, tokenizer, prompts, responses, progress: bool = True):
  """Train params for config.warm_start.steps steps; returns (params, final mean loss)."""
  ws = config.warm_start
  pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
  tokens, valid, maskable = sft_rows(prompts, responses, config.rollout.block_size, pad_id)
  start = layout.noisy_start(maskable, config.rollout.block_size)  # one shape for the whole run
  warmup = min(ws.warmup_steps, ws.steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(0.0, ws.lr, warmup, max(ws.steps, warmup + 1), ws.lr * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
  opt_state = optimizer.init(params)
  rng = np.random.default_rng(config.seed)
  key = jax.random.key(config.seed)
  losses = []
  for step in tqdm(range(ws.steps), desc="warm start", disable=not progress):
    idx = rng.choice(len(tokens), ws.batch_size, replace=len(tokens) < ws.batch_size)
    params, opt_state, loss = sft_step(params, opt_state, jax.random.fold_in(key, step), tokens[idx], valid[idx],
                                       maskable[idx], cfg=cfg, optimizer=optimizer,
                                       block_size=config.rollout.block_size, dtype=config.model.dtype,
                                       max_rate=ws.max_mask_rate, start=start)
    losses.append(loss)
  tail = float(np.mean(jax.device_get(losses[-20:]))) if losses else float("nan")
  return params, tail


def warm_start(config, workdir: str, cfg, params, tokenizer, stop_ids, prompts: list[list[int]],
               responses: list[list[int]], progress: bool = True) -> str:
  """Run SFT once and cache it as an Orbax model dir in workdir/warmstart; later calls reuse it.

  Non-finite weights after training stop the run (NonFiniteError) and leave no model dir.
  """
  out = os.path.join(workdir, WARM_START_DIR)
  if os.path.isdir(out):
    return out
  start = time.perf_counter()
  params, loss = run_sft(config, cfg, params, tokenizer, prompts, responses, progress)
  if not bool(guards.all_finite(params)):
    raise guards.NonFiniteError(f"warm start: non-finite weights after {config.warm_start.steps} steps (final loss "
                                f"{loss}); nothing written to {out}")
  write_orbax_dir(jax.device_get(params), out, cfg=cfg, tokenizer=tokenizer, stop_ids=stop_ids, overwrite=True)
  print(f"warm start: {config.warm_start.steps} steps in {time.perf_counter() - start:.0f}s, final loss {loss:.3f}"
        f" -> {out}")
  return out
