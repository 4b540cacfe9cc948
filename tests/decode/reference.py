"""A plain, uncached block-diffusion decoder on transformers' Qwen3: every step re-runs the whole prefix.

Written from SPEC §4 with numpy and Python loops, sharing no code with lrl_jax.decode; greedy only.
"""

import numpy as np
import torch

from tests.model.reference import block_causal_mask


def _block_logits(model, seq, block_start, block_size):
  n = len(seq)
  positions = np.arange(n)[None]
  mask = block_causal_mask(positions, np.ones((1, n), bool), block_size)
  additive = np.where(mask, 0.0, torch.finfo(torch.float32).min).astype(np.float32)[:, None]
  with torch.no_grad():
    out = model(input_ids=torch.tensor([seq]), position_ids=torch.tensor(positions),
                attention_mask=torch.tensor(additive)).logits[0].double().numpy()
  return out[block_start:block_start + block_size]


def _choose(strategy, masked_idx, conf, entropy, n_s, threshold, budget):
  """Positions (indices into the block) to fill, by SPEC §4.4, from the masked positions in left-to-right order."""
  if strategy == "sequential":
    return masked_idx[:n_s]
  by_conf = sorted(masked_idx, key=lambda i: (-conf[i], i))
  if strategy == "low_confidence_static":
    return by_conf[:n_s]
  if strategy == "low_confidence_dynamic":
    above = [i for i in masked_idx if conf[i] > threshold]
    return above if len(above) >= n_s else by_conf[:n_s]
  if strategy == "entropy_bounded":
    by_ent = sorted(masked_idx, key=lambda i: (entropy[i], i))
    total, count = 0.0, 0
    for i in by_ent:
      total += entropy[i]
      if total > budget:
        break
      count += 1
    return by_ent[:min(max(count, n_s, 1), len(masked_idx))]
  raise ValueError(strategy)


def reference_decode(model, prompt, *, block_size, steps, strategy, threshold, max_new_tokens, stop_ids, mask_id,
                     entropy_budget=0.35):
  """(response_ids, step_map, num_denoising_forwards) for one prompt, greedy."""
  p = len(prompt)
  total = -(-(p + max_new_tokens) // block_size) * block_size
  x = list(prompt) + [mask_id] * (total - p)
  step_map = [-1] * total
  forwards = 0
  block = p // block_size
  while True:
    start = block * block_size
    masked = [i for i in range(block_size) if start + i >= p]
    for s in range(steps):
      if not masked:
        break
      logits = _block_logits(model, x[:start + block_size], start, block_size)
      logits[:, mask_id] = -np.inf
      probs = np.exp(logits - logits.max(-1, keepdims=True))
      probs /= probs.sum(-1, keepdims=True)
      with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(probs > 0, probs * np.log(probs), 0.0), -1)
      n_s = block_size // steps + (1 if s < block_size % steps else 0)  # every block alike, SPEC §4.3
      for i in _choose(strategy, masked, probs.max(-1), entropy, n_s, threshold, entropy_budget):
        x[start + i] = int(probs[i].argmax())
        step_map[start + i] = forwards
        masked.remove(i)
      forwards += 1
    response_part = x[max(start, p):min(start + block_size, p + max_new_tokens)]
    if any(t in stop_ids for t in response_part) or start + block_size >= p + max_new_tokens:
      break
    block += 1
  response = x[p:p + max_new_tokens]
  steps_out = step_map[p:p + max_new_tokens]
  for j, t in enumerate(response):
    if t in stop_ids:
      return response[:j + 1], steps_out[:j + 1], forwards
  return response, steps_out, forwards
