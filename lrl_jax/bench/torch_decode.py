"""The decode benchmark's reference: SPEC §4 as a plain PyTorch loop on transformers' Qwen3 with a DynamicCache.

Prefill the complete prompt blocks, then per block: denoising forwards of the block against the cache (block-causal 4D
mask; the block's keys are cropped off again), then a commit forward that appends the block. Equal-length prompts,
so all rows share one block grid; finished rows ride along without filling, as in the JAX engine.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM

from lrl_jax.model.config import ModelConfig
from lrl_jax.weights.hf import hf_tensors

# transformers 5.x renamed the forward's `past_key_values` to `cache`
CACHE_ARG = "cache" if "cache" in inspect.signature(Qwen3ForCausalLM.forward).parameters else "past_key_values"


def _to_torch(array: np.ndarray) -> torch.Tensor:
  if array.dtype.name == "bfloat16":  # ml_dtypes bfloat16 has no torch.from_numpy mapping
    return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
  return torch.from_numpy(array.copy())


def hf_model(params: dict, cfg: ModelConfig, dtype: torch.dtype = torch.float32, device: str = "cpu"):
  """transformers' Qwen3ForCausalLM (sdpa attention) built from cfg with our params copied in, tensor by tensor."""
  raw = {k: v for k, v in cfg.to_hf_dict().items() if k not in ("block_size", "mask_token_id")}
  default = torch.get_default_dtype()
  torch.set_default_dtype(dtype)
  try:
    with torch.device(device):
      model = Qwen3ForCausalLM(Qwen3Config(**raw, attn_implementation="sdpa"))
  finally:
    torch.set_default_dtype(default)
  state = model.state_dict()
  copied = set()
  with torch.no_grad():
    for name, array in hf_tensors(params, cfg):
      state[name].copy_(_to_torch(array))
      copied.add(name)
  missing = set(state) - copied - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
  if missing:
    raise ValueError(f"parameters not copied from our params: {sorted(missing)[:3]}")
  return model.eval()


def _rank(score: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
  key = torch.where(masked, score, torch.full_like(score, -torch.inf))
  order = torch.argsort(-key, dim=-1, stable=True)
  return torch.argsort(order, dim=-1, stable=True)


def select(strategy, masked, prob, entropy, n, threshold, budget):
  """Boolean [b, B] positions to fill (SPEC §4.4), at least n [b] of them."""
  if strategy == "sequential":
    return masked & (torch.cumsum(masked, -1) <= n[:, None])
  top_n = masked & (_rank(prob, masked) < n[:, None])
  if strategy == "low_confidence_static":
    return top_n
  if strategy == "low_confidence_dynamic":
    confident = masked & (prob > threshold)
    return torch.where((confident.sum(-1) >= n)[:, None], confident, top_n)
  if strategy == "entropy_bounded":
    rank = _rank(-entropy, masked)
    sorted_entropy = torch.sort(torch.where(masked, entropy, torch.full_like(entropy, torch.inf)), -1).values
    within = (torch.cumsum(sorted_entropy, -1) <= budget).sum(-1)
    count = torch.minimum(torch.maximum(within, n.clamp(min=1)), masked.sum(-1))
    return masked & (rank < count[:, None])
  raise ValueError(f"unknown strategy {strategy!r}")


def _block_causal(length: int, block_size: int, device) -> torch.Tensor:
  blk = torch.arange(length, device=device) // block_size
  allowed = blk[None, :] <= blk[:, None]
  return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]


@torch.no_grad()
def decode(model, prompts: np.ndarray, *, block_size: int, steps: int, strategy: str, threshold: float,
           max_new_tokens: int, stop_ids, mask_id: int, entropy_budget: float = 0.35) -> dict:
  """Greedy decode of equal-length prompts [b, p]: tokens/step_map [b, slots] and batched model `calls`."""
  dev = model.device
  b, p = prompts.shape
  bs, end = block_size, p + max_new_tokens
  x = torch.full((b, -(-end // bs) * bs), mask_id, dtype=torch.long, device=dev)
  x[:, :p] = torch.as_tensor(prompts, device=dev)
  step_map = torch.full_like(x, -1)
  nf = torch.zeros(b, dtype=torch.long, device=dev)
  stops = torch.as_tensor(list(stop_ids) or [-1], device=dev)
  cache, calls = DynamicCache(), 0
  pre = (p // bs) * bs
  if pre:
    model(x[:, :pre], position_ids=torch.arange(pre, device=dev).expand(b, -1),
          attention_mask=_block_causal(pre, bs, dev).to(model.dtype), **{CACHE_ARG: cache}, use_cache=True)
  finished = torch.zeros(b, dtype=torch.bool, device=dev)
  start = pre
  while True:
    pos = torch.arange(start, start + bs, device=dev).expand(b, -1)
    visible = torch.zeros((1, 1, bs, start + bs), dtype=model.dtype, device=dev)  # cache + own block, all visible
    masked = pos >= p
    for s in range(steps):
      working = ~finished & masked.any(-1)
      if not working.any():
        break
      logits = model(x[:, start:start + bs], position_ids=pos, attention_mask=visible, **{CACHE_ARG: cache},
                     use_cache=True).logits.float()
      cache.crop(-bs)
      calls += 1
      logits[..., mask_id] = -torch.inf
      logp = torch.log_softmax(logits, -1)
      tok_logp, tok = logp.max(-1)
      entropy = -(logp.exp() * logp).nan_to_num().sum(-1) if strategy == "entropy_bounded" else None
      n = torch.full((b,), bs // steps + int(s < bs % steps), device=dev)  # SPEC §4.3, every block alike
      fill = select(strategy, masked, tok_logp.exp(), entropy, n, threshold, entropy_budget) & working[:, None]
      x[:, start:start + bs] = torch.where(fill, tok, x[:, start:start + bs])
      step_map[:, start:start + bs] = torch.where(fill, nf[:, None], step_map[:, start:start + bs])
      masked &= ~fill
      nf += working
    blk = x[:, start:start + bs]
    stopped = (torch.isin(blk, stops) & (pos >= p) & (pos < end)).any(-1) | (start + bs >= end)
    go_on = ~finished & ~stopped
    finished |= stopped
    if not go_on.any():
      break
    model(blk, position_ids=pos, attention_mask=visible, **{CACHE_ARG: cache}, use_cache=True)  # commit
    calls += 1
    start += bs
  return {"tokens": x.cpu().numpy(), "step_map": step_map.cpu().numpy(), "calls": calls}


def responses(out: dict, prompt_len: int, max_new_tokens: int, stop_ids) -> list[list[int]]:
  """Per row: the response up to and including the first stop id, at most max_new_tokens."""
  result = []
  for row in out["tokens"][:, prompt_len:prompt_len + max_new_tokens]:
    hits = np.flatnonzero(np.isin(row, list(stop_ids))) if stop_ids else []
    result.append(row[:hits[0] + 1 if len(hits) else len(row)].tolist())
  return result
