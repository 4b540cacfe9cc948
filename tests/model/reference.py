"""Independent references for the model tests: transformers' Qwen3 (torch, eager) and masks written as loops."""

import numpy as np
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def hf_model(hf_dir: str) -> Qwen3ForCausalLM:
  import json
  with open(f"{hf_dir}/config.json") as f:
    raw = json.load(f)
  raw = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "block_size", "mask_token_id")}
  model = Qwen3ForCausalLM.from_pretrained(hf_dir, config=Qwen3Config(**raw), attn_implementation="eager",
                                           dtype=torch.float32)
  return model.eval()


def hf_logits(model, tokens: np.ndarray, positions: np.ndarray, allowed: np.ndarray) -> np.ndarray:
  """Logits [b, t, vocab] of transformers' Qwen3 with an explicit 4D additive mask built from allowed [b, t, t]."""
  additive = np.where(allowed, 0.0, torch.finfo(torch.float32).min).astype(np.float32)[:, None]
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), position_ids=torch.tensor(positions),
                attention_mask=torch.tensor(additive))
  return out.logits.numpy()


def causal_mask(valid: np.ndarray) -> np.ndarray:
  """[b, t, t]: key j <= query i and key real; pad queries see themselves (keeps softmax finite)."""
  b, t = valid.shape
  m = np.zeros((b, t, t), bool)
  for r in range(b):
    for i in range(t):
      for j in range(t):
        m[r, i, j] = valid[r, j] and j <= i
      m[r, i, i] = True
  return m


def block_causal_mask(positions: np.ndarray, valid: np.ndarray, bs: int) -> np.ndarray:
  b, t = positions.shape
  m = np.zeros((b, t, t), bool)
  for r in range(b):
    for i in range(t):
      for j in range(t):
        m[r, i, j] = valid[r, j] and positions[r, j] // bs <= positions[r, i] // bs
      m[r, i, i] = True
  return m


def training_mask(length: int, bs: int) -> np.ndarray:
  """[2L, 2L] mask of the [noisy | clean] layout, each rule of SPEC §3 written out."""
  m = np.zeros((2 * length, 2 * length), bool)
  blk = lambda i: i // bs
  for i in range(length):
    for j in range(length):
      m[i, j] = blk(i) == blk(j)  # noisy → noisy, own block
      m[i, length + j] = blk(j) < blk(i)  # noisy → clean, earlier blocks
      m[length + i, length + j] = blk(j) <= blk(i)  # clean → clean, block-causal
      # clean → noisy stays False
  return m
