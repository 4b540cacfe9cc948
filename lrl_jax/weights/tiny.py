"""Tiny SDAR-format checkpoints and a character tokenizer, built offline for tests, the CPU demo and notebooks.

`make_hf_checkpoint` uses transformers' Qwen3 (torch, the test extra) so the weights come from an independent
implementation; `make_orbax_checkpoint` needs only JAX.
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Iterable

import jax
import jax.numpy as jnp

from lrl_jax.model.config import ModelConfig
from lrl_jax.model.params import init_params
from lrl_jax.weights.checkpoint import PARAMS_DIR, atomic_dir, save_orbax_params

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>")
CHARS = "\n" + string.printable[:95]  # digits, letters, punctuation and space


def char_tokenizer():
  """A character-level fast tokenizer: the 4 SDAR special tokens (ids 0-3) then one id per printable char."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
  for ch in CHARS:
    vocab.setdefault(ch, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
  tok.decoder = decoders.Fuse()
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=list(SPECIAL_TOKENS[1:]))
  return fast


WORD_PATTERN = r" ?[A-Za-z]+| ?\d|\s|[^A-Za-z\d\s]"


def word_tokenizer(corpus: Iterable[str]):
  """A word-level fast tokenizer for the CPU demo: the 4 special tokens, every printable char, then each
  (space-prefixed) word of the corpus; digits stay single tokens so arithmetic is spelled out.

  Prompts come out ~4x shorter than with `char_tokenizer`; words outside the corpus map to <|endoftext|>.
  """
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
  for ch in CHARS:
    vocab.setdefault(ch, len(vocab))
  for text in corpus:
    for special in SPECIAL_TOKENS:
      text = text.replace(special, "\n")
    for word in re.findall(WORD_PATTERN, text):
      vocab.setdefault(word, len(vocab))
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
  tok.decoder = decoders.Fuse()
  return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=list(SPECIAL_TOKENS[1:]))


def tiny_config(vocab_size: int = 128, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                num_kv_heads: int = 2, head_dim: int = 16, intermediate_size: int = 128, block_size: int = 4,
                tie_word_embeddings: bool = False, rope_theta: float = 10000.0) -> ModelConfig:
  """A small SDAR config whose special ids match `char_tokenizer` (mask id 3)."""
  return ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                     num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                     rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings, block_size=block_size,
                     mask_token_id=SPECIAL_TOKENS.index("<|MASK|>"), max_position_embeddings=4096)


def sdar_config_json(cfg: ModelConfig) -> dict:
  """config.json of an SDAR checkpoint (model_type "sdar", block_size, mask_token_id) for cfg."""
  out = cfg.to_hf_dict()
  out.update(model_type="sdar", architectures=["SDARForCausalLM"], bos_token_id=0, eos_token_id=2, pad_token_id=0)
  return out


def _write_side(out_dir: str, cfg: ModelConfig) -> None:
  char_tokenizer().save_pretrained(out_dir)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(sdar_config_json(cfg), f, indent=2)
  with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": [2, 0], "pad_token_id": 0}, f, indent=2)


def make_hf_checkpoint(out_dir: str, cfg: ModelConfig, seed: int = 0, dtype: str = "float32",
                       max_shard_size: str | int = "5GB", init_std: float = 0.02) -> str:
  """Random-init transformers Qwen3 → safetensors (sharded when large) + SDAR config.json + tokenizer.

  A larger init_std gives peakier next-token distributions, so confidence thresholds are exercised.
  """
  import torch
  from transformers import Qwen3Config, Qwen3ForCausalLM

  torch.manual_seed(seed)
  hf_cfg = Qwen3Config(initializer_range=init_std,
                       **{k: v for k, v in cfg.to_hf_dict().items() if k not in ("block_size", "mask_token_id")})
  model = Qwen3ForCausalLM(hf_cfg).to(getattr(torch, dtype))
  with torch.no_grad():  # random, non-trivial norm weights so the parity tests exercise them
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
  model.save_pretrained(out_dir, max_shard_size=max_shard_size)
  _write_side(out_dir, cfg)
  return out_dir


def make_orbax_checkpoint(out_dir: str, cfg: ModelConfig, seed: int = 0, dtype=None) -> str:
  """Random-init params (our init) saved as an Orbax model directory with the char tokenizer."""
  params = init_params(cfg, jax.random.key(seed), dtype or jnp.float32)
  with atomic_dir(out_dir, overwrite=True) as tmp:
    save_orbax_params(params, os.path.join(tmp, PARAMS_DIR))
    _write_side(tmp, cfg)
  return out_dir
