"""Warm start (supervised, before RL): train the demo's reference solutions with the pieces of lrl_jax/rl/sft.py
and cache the result as the Orbax model dir W/warmstart, which `train` and `sft` reuse when it exists.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import optax
from tqdm import tqdm

from lrl_jax.rl import guards, layout
from lrl_jax.rl.sft import sft_rows, sft_step
from lrl_jax.weights.checkpoint import write_orbax_dir

WARM_START_DIR = "warmstart"


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
