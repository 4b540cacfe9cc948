"""Logits parity with transformers' Qwen3 (eager attention, explicit 4D masks); float32, max |Δ| <= 1e-4."""

import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.model import forward, logits
from lrl_jax.weights import load_checkpoint, tiny
from tests.model import reference

TOL = 1e-4


@pytest.fixture(scope="module", params=["untied_gqa", "tied_gqa_bias"])
def model_pair(request, tiny_hf_dir, tmp_path_factory):
  """(our (cfg, params), HF torch model) for an untied 4/2-head model and a tied 4/1-head model with biases."""
  if request.param == "untied_gqa":
    path = tiny_hf_dir
  else:
    cfg = tiny.tiny_config(num_kv_heads=1, tie_word_embeddings=True)
    cfg = type(cfg)(**{**cfg.__dict__, "attention_bias": True})
    path = tiny.make_hf_checkpoint(str(tmp_path_factory.mktemp("tied")), cfg, seed=1)
  cfg, params, _ = load_checkpoint(path)
  return cfg, params, reference.hf_model(path)


def _ours(cfg, params, tokens, positions, valid=None, noisy=None, mode="block"):
  hidden, _ = forward(params, cfg, jnp.asarray(tokens), jnp.asarray(positions),
                      valid=None if valid is None else jnp.asarray(valid),
                      noisy=None if noisy is None else jnp.asarray(noisy), mode=mode)
  return np.asarray(logits(params, cfg, hidden))


def _tokens(cfg, shape, seed=0):
  return np.random.default_rng(seed).integers(4, cfg.vocab_size, shape)


def test_causal_parity(model_pair):
  cfg, params, hf = model_pair
  tokens = _tokens(cfg, (2, 11))
  positions = np.broadcast_to(np.arange(11), (2, 11))
  valid = np.ones((2, 11), bool)
  want = reference.hf_logits(hf, tokens, positions, reference.causal_mask(valid))
  got = _ours(cfg, params, tokens, positions, mode="causal")
  assert np.abs(got - want).max() <= TOL


def test_block_causal_parity(model_pair):
  cfg, params, hf = model_pair
  tokens = _tokens(cfg, (2, 13), seed=1)
  positions = np.broadcast_to(np.arange(13), (2, 13))
  valid = np.ones((2, 13), bool)
  want = reference.hf_logits(hf, tokens, positions, reference.block_causal_mask(positions, valid, cfg.block_size))
  got = _ours(cfg, params, tokens, positions, mode="block")
  assert np.abs(got - want).max() <= TOL
  # the mask matters: a causal run differs inside blocks
  assert np.abs(_ours(cfg, params, tokens, positions, mode="causal") - want).max() > 1e-3


def test_training_layout_matches_hf_on_explicit_mask(model_pair):
  """Noisy-position logits of [x_t | x_0] equal transformers run on the same 2L sequence with the SPEC mask."""
  cfg, params, hf = model_pair
  length, prompt = 14, 5
  clean = _tokens(cfg, (1, length), seed=2)
  noisy_tokens = clean.copy()
  rng = np.random.default_rng(3)
  masked = np.zeros((1, length), bool)
  masked[0, prompt:] = rng.random(length - prompt) < 0.6
  noisy_tokens[masked] = cfg.mask_token_id
  tokens = np.concatenate([noisy_tokens, clean], axis=1)
  positions = np.tile(np.arange(length), 2)[None]
  noisy_flag = np.concatenate([np.ones(length, bool), np.zeros(length, bool)])[None]
  got = _ours(cfg, params, tokens, positions, noisy=noisy_flag)[:, :length]
  want = reference.hf_logits(hf, tokens, positions, reference.training_mask(length, cfg.block_size)[None])[:, :length]
  assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_invariance(model_pair, side):
  """Pads (masked, positions counted from the first real token) do not change real-token logits."""
  cfg, params, _ = model_pair
  n, pad = 9, 3
  tokens = _tokens(cfg, (1, n), seed=4)
  alone = _ours(cfg, params, tokens, np.arange(n)[None])
  pads = np.zeros((1, pad), tokens.dtype)
  if side == "left":
    padded = np.concatenate([pads, tokens], 1)
    positions = np.concatenate([np.zeros(pad, int), np.arange(n)])[None]
    valid = np.arange(n + pad)[None] >= pad
    real = slice(pad, None)
  else:
    padded = np.concatenate([tokens, pads], 1)
    positions = np.arange(n + pad)[None]
    valid = np.arange(n + pad)[None] < n
    real = slice(0, n)
  got = _ours(cfg, params, padded, positions, valid=valid)[:, real]
  assert np.abs(got - alone).max() <= 1e-5
