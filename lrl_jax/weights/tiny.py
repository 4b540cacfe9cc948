"""Tiny SDAR-format checkpoints and a character tokenizer, built offline for tests, the CPU demo and notebooks.

`make_hf_checkpoint` uses transformers' Qwen3 (torch, the test extra) so the weights come from an independent
implementation; `make_orbax_checkpoint` needs only JAX.
"""

from __future__ import annotations

import dataclasses
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


def _save_qwen3_weights(out_dir: str, cfg: ModelConfig, seed: int, dtype: str, max_shard_size: str | int,
                        init_std: float) -> None:
  """Random-init transformers Qwen3 weights → safetensors in out_dir (its config files are overwritten after)."""
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


def make_hf_checkpoint(out_dir: str, cfg: ModelConfig, seed: int = 0, dtype: str = "float32",
                       max_shard_size: str | int = "5GB", init_std: float = 0.02) -> str:
  """Random-init transformers Qwen3 → safetensors (sharded when large) + SDAR config.json + tokenizer.

  A larger init_std gives peakier next-token distributions, so confidence thresholds are exercised.
  """
  _save_qwen3_weights(out_dir, cfg, seed, dtype, max_shard_size, init_std)
  _write_side(out_dir, cfg)
  return out_dir


def make_orbax_checkpoint(out_dir: str, cfg: ModelConfig, seed: int = 0, dtype=None) -> str:
  """Random-init params (our init) saved as an Orbax model directory with the char tokenizer."""
  params = init_params(cfg, jax.random.key(seed), dtype or jnp.float32)
  with atomic_dir(out_dir, overwrite=True) as tmp:
    save_orbax_params(params, os.path.join(tmp, PARAMS_DIR))
    _write_side(tmp, cfg)
  return out_dir


# --- the Hugging Face hub's SDAR layout (JetLM/SDAR-*-Chat), in miniature -----------------------------------------

HUB_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>")  # ids 256.. after the 256 bytes
HUB_VOCAB_SIZE = 272  # padded past the 260 tokens, as the hub's 151936 embedding rows pad its tokenizer
HUB_REMOTE_CODE = ("configuration_sdar.py", "modeling_sdar.py", "tokenization_qwen2.py", "tokenization_qwen2_fast.py")
HUB_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_symbols() -> list[str]:
  """The 256 printable stand-ins of byte-level BPE, indexed by byte value (bytes that print stand for themselves)."""
  kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  out, extra = {}, 0
  for b in range(256):
    if b in kept:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + extra)
      extra += 1
  return [out[b] for b in range(256)]


def _write_hub_tokenizer(out_dir: str) -> None:
  """A byte-level BPE tokenizer (no merges: one token per byte) saved as the hub's Qwen2 files: tokenizer.json,
  vocab.json, merges.txt, tokenizer_config.json naming the remote classes in auto_map, special/added token maps."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

  vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], continuing_subword_prefix="", end_of_word_suffix=""))
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in HUB_SPECIAL_TOKENS])
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  added = {t: len(vocab) + i for i, t in enumerate(HUB_SPECIAL_TOKENS)}
  entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
  tokenizer_config = {
      "add_bos_token": False, "add_prefix_space": False,
      "added_tokens_decoder": {str(i): {"content": t, **entry} for t, i in added.items()},
      "additional_special_tokens": list(HUB_SPECIAL_TOKENS[1:]),
      "auto_map": {"AutoTokenizer": ["tokenization_qwen2.Qwen2Tokenizer", "tokenization_qwen2_fast.Qwen2TokenizerFast"]},
      "bos_token": None, "chat_template": HUB_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
      "eos_token": "<|im_end|>", "errors": "replace", "extra_special_tokens": {}, "model_max_length": 131072,
      "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
      "unk_token": None,
  }
  special_map = {"additional_special_tokens": list(HUB_SPECIAL_TOKENS[1:]), "eos_token": "<|im_end|>",
                 "pad_token": "<|endoftext|>"}
  files = {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special_map,
           "added_tokens.json": added, "vocab.json": vocab}
  for name, content in files.items():
    with open(os.path.join(out_dir, name), "w") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")


def hub_config(tied: bool = False, block_size: int = 4) -> ModelConfig:
  """A small config whose special ids match `make_hub_layout_checkpoint`'s tokenizer (mask id 259)."""
  return dataclasses.replace(tiny_config(vocab_size=HUB_VOCAB_SIZE, block_size=block_size, tie_word_embeddings=tied),
                             mask_token_id=_hub_id("<|MASK|>"))


def _hub_id(token: str) -> int:
  return 256 + HUB_SPECIAL_TOKENS.index(token)


def hub_config_json(cfg: ModelConfig, dtype: str) -> dict:
  """config.json as the hub's SDAR checkpoints write it: remote classes in auto_map, model_type "sdar",
  flex_attention, rope_scaling null, transformers 4.52.4."""
  return {
      "architectures": ["SDARForCausalLM"], "attention_bias": cfg.attention_bias, "attention_dropout": 0.0,
      "attn_implementation": "flex_attention",
      "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                   "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
      "block_size": cfg.block_size, "bos_token_id": _hub_id("<|endoftext|>"), "eos_token_id": _hub_id("<|endoftext|>"),
      "fuse_cross_entropy": False, "head_dim": cfg.head_dim, "hidden_act": "silu", "hidden_size": cfg.hidden_size,
      "initializer_range": 0.02, "intermediate_size": cfg.intermediate_size, "mask_token_id": cfg.mask_token_id,
      "max_position_embeddings": cfg.max_position_embeddings, "max_window_layers": cfg.num_layers,
      "model_type": "sdar", "num_attention_heads": cfg.num_heads, "num_hidden_layers": cfg.num_layers,
      "num_key_value_heads": cfg.num_kv_heads, "rms_norm_eps": cfg.rms_norm_eps, "rope_scaling": None,
      "rope_theta": cfg.rope_theta, "sliding_window": None, "tie_word_embeddings": cfg.tie_word_embeddings,
      "torch_dtype": dtype, "transformers_version": "4.52.4", "use_cache": True, "use_sliding_window": False,
      "vocab_size": cfg.vocab_size,
  }


def make_hub_layout_checkpoint(out_dir: str, tied: bool = False, seed: int = 0, dtype: str = "float32",
                               max_shard_size: str | int = "300KB", init_std: float = 0.02) -> str:
  """A tiny SDAR checkpoint in the hub's exact file layout: sharded safetensors + index, config.json and
  tokenizer_config.json whose auto_map names remote code, generation_config.json with eos [<|im_end|>,
  <|endoftext|>], and stand-ins for the remote-code files that fail if anything imports them.

  tied=False is SDAR-4B/8B-Chat's untied lm_head; tied=True shares the embedding (no lm_head tensor is saved).
  """
  cfg = hub_config(tied)
  _save_qwen3_weights(out_dir, cfg, seed, dtype, max_shard_size, init_std)
  _write_hub_tokenizer(out_dir)
  generation = {"bos_token_id": _hub_id("<|endoftext|>"), "eos_token_id": [_hub_id("<|im_end|>"),
                _hub_id("<|endoftext|>")], "pad_token_id": _hub_id("<|endoftext|>"), "transformers_version": "4.52.4"}
  for name, content in (("config.json", hub_config_json(cfg, dtype)), ("generation_config.json", generation)):
    with open(os.path.join(out_dir, name), "w") as f:
      json.dump(content, f, indent=2)
  for name in HUB_REMOTE_CODE:
    with open(os.path.join(out_dir, name), "w") as f:
      f.write(f'"""Stand-in for the hub\'s remote code: lrl_jax must load this directory without running it."""\n'
              f'raise ImportError("{name}: remote code was imported")\n')
  return out_dir
