"""Logits parity of the MoE model with transformers' Qwen3-MoE (torch, eager, fp32): causal, block-causal and the
[noisy | clean] training layout, top-2 and top-3 of 8 experts, norm_topk_prob both ways; max |Δ| <= 1e-4."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from lrl_jax.model import forward, logits
from lrl_jax.weights import load_checkpoint, tiny_moe
from tests.model import reference

TOL = 1e-4
CASES = {"top2_norm": dict(top_k=2, norm_topk_prob=True), "top3_raw": dict(top_k=3, norm_topk_prob=False)}


def hf_moe_model(hf_dir: str) -> Qwen3MoeForCausalLM:
  """transformers' Qwen3-MoE on an SDAR-MoE dir (its config.json read with the SDAR-only keys dropped)."""
  with open(f"{hf_dir}/config.json") as f:
    raw = json.load(f)
  drop = ("model_type", "architectures", "block_size", "mask_token_id", "auto_map", "rope_scaling")
  config = Qwen3MoeConfig(**{k: v for k, v in raw.items() if k not in drop})
  return Qwen3MoeForCausalLM.from_pretrained(hf_dir, config=config, attn_implementation="eager",
                                             dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=sorted(CASES))
def moe_pair(request, tmp_path_factory):
  """(cfg, params, torch model) of a tiny 8-expert checkpoint (init std 0.1: the experts' outputs matter)."""
  cfg = tiny_moe.tiny_moe_config(**CASES[request.param])
  path = tiny_moe.make_hf_moe_checkpoint(str(tmp_path_factory.mktemp(request.param)), cfg, seed=3, init_std=0.1)
  cfg, params, _ = load_checkpoint(path)
  return cfg, params, hf_moe_model(path)


def _ours(cfg, params, tokens, positions, noisy=None, mode="block"):
  hidden, _ = forward(params, cfg, jnp.asarray(tokens), jnp.asarray(positions), mode=mode,
                      noisy=None if noisy is None else jnp.asarray(noisy))
  return np.asarray(logits(params, cfg, hidden))


def _tokens(cfg, shape, seed):
  return np.random.default_rng(seed).integers(4, cfg.vocab_size, shape)


def test_config_read_from_the_hub_format(moe_pair):
  cfg, _, model = moe_pair
  assert cfg.model_type == "sdar_moe" and cfg.num_experts == 8 and cfg.mask_token_id == 3
  assert (cfg.num_experts_per_tok, cfg.norm_topk_prob) == (model.config.num_experts_per_tok,
                                                          model.config.norm_topk_prob)


def test_causal_parity(moe_pair):
  cfg, params, model = moe_pair
  tokens, positions = _tokens(cfg, (2, 11), 0), np.broadcast_to(np.arange(11), (2, 11))
  want = reference.hf_logits(model, tokens, positions, reference.causal_mask(np.ones((2, 11), bool)))
  assert np.abs(_ours(cfg, params, tokens, positions, mode="causal") - want).max() <= TOL


def test_block_causal_parity(moe_pair):
  cfg, params, model = moe_pair
  tokens, positions = _tokens(cfg, (2, 13), 1), np.broadcast_to(np.arange(13), (2, 13))
  want = reference.hf_logits(model, tokens, positions,
                             reference.block_causal_mask(positions, np.ones((2, 13), bool), cfg.block_size))
  assert np.abs(_ours(cfg, params, tokens, positions) - want).max() <= TOL


def test_training_layout_parity(moe_pair):
  cfg, params, model = moe_pair
  length, prompt = 14, 5
  clean = _tokens(cfg, (1, length), 2)
  noisy_tokens = clean.copy()
  masked = np.zeros((1, length), bool)
  masked[0, prompt:] = np.random.default_rng(3).random(length - prompt) < 0.6
  noisy_tokens[masked] = cfg.mask_token_id
  tokens = np.concatenate([noisy_tokens, clean], axis=1)
  positions = np.tile(np.arange(length), 2)[None]
  noisy = np.concatenate([np.ones(length, bool), np.zeros(length, bool)])[None]
  got = _ours(cfg, params, tokens, positions, noisy=noisy)[:, :length]
  want = reference.hf_logits(model, tokens, positions, reference.training_mask(length, cfg.block_size)[None])
  assert np.abs(got - want[:, :length]).max() <= TOL


def test_routing_matters(moe_pair):
  """The parity is not carried by attention alone: another top-k or normalisation changes the logits."""
  cfg, params, _ = moe_pair
  tokens, positions = _tokens(cfg, (1, 9), 4), np.arange(9)[None]
  other = type(cfg)(**{**cfg.__dict__, "num_experts_per_tok": cfg.num_experts_per_tok + 1})
  flipped = type(cfg)(**{**cfg.__dict__, "norm_topk_prob": not cfg.norm_topk_prob})
  base = _ours(cfg, params, tokens, positions)
  assert np.abs(_ours(other, params, tokens, positions) - base).max() > 1e-3
  assert np.abs(_ours(flipped, params, tokens, positions) - base).max() > 1e-3
