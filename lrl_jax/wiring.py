"""Build what a run needs from its config: model, tokenizer, data, algorithm settings, mesh and shardings."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lrl_jax.data import demo_tasks, formats, templates
from lrl_jax.decode import DecodeConfig, default_stop_ids
from lrl_jax.model import init_params
from lrl_jax.model.config import ModelConfig
from lrl_jax.rl import losses, shaping
from lrl_jax.weights import load_checkpoint, tiny

DEMO_STOP_IDS = (2, 0)  # <|im_end|>, <|endoftext|> of the char tokenizer


def _resolve(defaults, overrides: ml_collections.ConfigDict):
  """Algorithm defaults with every non-None config value applied on top."""
  changes = {k: v for k, v in overrides.to_dict().items() if v is not None and hasattr(defaults, k)}
  return dataclasses.replace(defaults, **changes)


def algorithm_configs(config) -> tuple[shaping.ShapingConfig, losses.LossConfig]:
  """Shaping and loss settings of `config.algorithm` (SPEC §7.5) with explicit config values overriding."""
  return _resolve(shaping.for_algorithm(config.algorithm), config.rl), _resolve(
      losses.for_algorithm(config.algorithm), config.loss)


def model_from_config(config) -> tuple[ModelConfig, Any, Any, tuple[int, ...]]:
  """(cfg, float32 params, tokenizer, stop ids): the checkpoint, or a fresh tiny model with the char tokenizer."""
  if config.model.checkpoint:
    cfg, params, tok = load_checkpoint(config.model.checkpoint, dtype=jnp.float32)
    if tok is None:
      raise ValueError(f"{config.model.checkpoint}: no tokenizer files; training needs one to build prompts")
    stops = default_stop_ids(config.model.checkpoint)
  else:
    cfg = tiny.tiny_config(block_size=config.rollout.block_size, **config.model.tiny.to_dict())
    params = init_params(cfg, jax.random.key(config.seed))
    tok, stops = _tiny_tokenizer(config.model.tokenizer), DEMO_STOP_IDS
    if len(tok) > cfg.vocab_size:
      raise ValueError(f"model.tiny.vocab_size={cfg.vocab_size} is smaller than the tokenizer ({len(tok)} tokens)")
  if config.rollout.stop_ids:
    stops = tuple(int(s) for s in str(config.rollout.stop_ids).split(","))
  return cfg, params, tok, stops


def _tiny_tokenizer(kind: str):
  """The char tokenizer, or the word tokenizer over the demo's vocabulary (template + every demo task word)."""
  if kind == "chars":
    return tiny.char_tokenizer()
  if kind != "words":
    raise ValueError(f"model.tokenizer={kind!r} must be 'chars' or 'words'")
  corpus = [templates.MATH_TEMPLATE] + [t.question + " " + t.solution for d in range(1, demo_tasks.MAX_DIFFICULTY + 1)
                                         for t in demo_tasks.make_tasks(500, d, seed=0)]
  return tiny.word_tokenizer(corpus)


def load_dataset(name: str, size: int, difficulty: int, seed: int) -> list:
  """Records of `name`: "demo" (procedural tasks), a shipped sample name, or a dataset file."""
  if name == "demo":
    return [formats.record_from_dict(t.to_dict(), f"demo task {i}")
            for i, t in enumerate(demo_tasks.make_tasks(size, difficulty, seed))]
  path = name if os.path.exists(name) else formats.sample_path(name)
  return formats.load_records(path)


def demo_solutions(size: int, difficulty: int, seed: int) -> list[str]:
  return [t.solution for t in demo_tasks.make_tasks(size, difficulty, seed)]


def prompt_ids(records: list, tokenizer) -> list[list[int]]:
  """Tokenized ChatML prompts (SPEC §8) of the records."""
  return [tokenizer(templates.build_prompt(r), add_special_tokens=False)["input_ids"] for r in records]


def rollout_decode_config(config, stops: tuple[int, ...], greedy: bool = False, threshold: float | None = None,
                          dtype: str | None = None) -> DecodeConfig:
  r = config.rollout
  return DecodeConfig(block_size=r.block_size, steps=r.steps or None, strategy=r.strategy,
                      threshold=r.threshold if threshold is None else threshold, temperature=r.temperature,
                      top_k=r.top_k, top_p=r.top_p, greedy=greedy, max_new_tokens=r.max_new_tokens,
                      stop_ids=stops, dtype=dtype or ("bfloat16" if config.model.dtype == "bfloat16" else "float32"))
