"""Program wiring: what a run needs, built from its config (model, tokenizer, datasets, algorithm and decode settings).

It sits above the stages (it imports data, decode, model, rl and weights) and below the entry points and the
trainer; no stage imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp

from lrl_jax import config_parts, files
from lrl_jax.weights.run_dir import model_files_dir, model_params
from lrl_jax.data import demo_tasks, formats, templates
from lrl_jax.decode import DecodeConfig, default_stop_ids
from lrl_jax.checks import ConfigValueError
from lrl_jax.defaults import parse_stop_ids
from lrl_jax.model import init_params
from lrl_jax.model.config import ModelConfig, load_config
from lrl_jax.rl.losses import LossConfig
from lrl_jax.rl.shaping import ShapingConfig
from lrl_jax.weights import load_tokenizer, tiny
from lrl_jax.weights.checkpoint import side_files

DEMO_STOP_IDS = (2, 0)  # <|im_end|>, <|endoftext|> of the char tokenizer


def algorithm_configs(config) -> tuple[ShapingConfig, LossConfig]:
  """Shaping and loss settings of `config.algorithm` (SPEC §7.5) with explicit config values overriding."""
  return config_parts.shaping_config(config), config_parts.loss_config(config)


def load_model(path: str, dtype=None) -> tuple[ModelConfig, Any, Any]:
  """(config, params, tokenizer) of an HF or Orbax model dir, or of a run dir (its newest checkpoint's params)."""
  files_dir = model_files_dir(path)
  cfg = load_config(files_dir)
  return cfg, model_params(path, cfg, dtype), load_tokenizer(files_dir)


def model_from_config(config) -> tuple[ModelConfig, Any, Any, tuple[int, ...]]:
  """(cfg, float32 params, tokenizer, stop ids): the checkpoint, or a fresh tiny model with the demo tokenizer."""
  if config.model.checkpoint:
    cfg, params, tok = load_model(config.model.checkpoint, jnp.float32)
    stops = default_stop_ids(model_files_dir(config.model.checkpoint))
  else:
    cfg = tiny.tiny_config(block_size=config.rollout.block_size, **config.model.tiny.to_dict())
    tok, stops = _tiny_tokenizer(config.model.tokenizer), DEMO_STOP_IDS
    if len(tok) > cfg.vocab_size:
      raise ConfigValueError(f"config.model.tiny.vocab_size: {cfg.vocab_size} is smaller than the "
                             f"'{config.model.tokenizer}' tokenizer ({len(tok)} tokens)")
    params = init_params(cfg, jax.random.key(config.seed))
  explicit = parse_stop_ids(config.rollout.stop_ids, "config.rollout.stop_ids")
  return cfg, params, tok, stops if explicit is None else explicit


def _tiny_tokenizer(kind: str):
  """The char tokenizer, or the word tokenizer over the demo's vocabulary (template + every demo task word)."""
  if kind == "chars":
    return tiny.char_tokenizer()
  corpus = [templates.MATH_TEMPLATE] + [t.question + " " + t.solution for d in range(1, demo_tasks.MAX_DIFFICULTY + 1)
                                         for t in demo_tasks.make_tasks(500, d, seed=0)]
  return tiny.word_tokenizer(corpus)


def write_model_files(out_dir: str, cfg: ModelConfig, tokenizer, stop_ids: tuple[int, ...],
                      src_dir: str | None = None) -> None:
  """A model dir without weights (config.json, tokenizer, generation_config.json naming the stop ids), atomically:
  the side files of `src_dir` when given, else made from cfg and the tokenizer."""
  with files.atomic_dir(out_dir, overwrite=True) as tmp:
    if src_dir is not None:
      for name in side_files(src_dir):
        shutil.copy2(os.path.join(src_dir, name), os.path.join(tmp, name))
    else:
      tokenizer.save_pretrained(tmp)
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg.to_hf_dict(), f, indent=2)
    if src_dir is None or tuple(default_stop_ids(src_dir)) != tuple(stop_ids):
      with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": list(stop_ids)}, f)


def load_dataset(name: str, size: int, difficulty: int, seed: int) -> list:
  """Records of `name`: "demo" (`size` procedural tasks), a dataset file, or a shipped sample name."""
  return formats.demo_records(size, difficulty, seed) if name == "demo" else formats.load_records(
    formats.dataset_path(name))


def train_records(config) -> list:
  d = config.data
  return load_dataset(d.train, d.demo_size, d.demo_difficulty, d.shuffle_seed)


def eval_records(config) -> list:
  """The run's held-out set (config.data.eval; "demo": eval_size problems drawn with the next seed), or []."""
  d = config.data
  if not d.eval:
    return []
  return demo_eval_records(d.eval_size, d.demo_difficulty, d.shuffle_seed) if d.eval == "demo" else (
    load_dataset(d.eval, d.eval_size, d.demo_difficulty, d.shuffle_seed + 1)[:d.eval_size])


def demo_eval_records(size: int, difficulty: int, shuffle_seed: int) -> list:
  """The demo's held-out problems of a run with these data settings (what `eval --config.datasets=demo` scores)."""
  return load_dataset("demo", size, difficulty, shuffle_seed + 1)[:size]


def demo_solutions(size: int, difficulty: int, seed: int) -> list[str]:
  return [t.solution for t in demo_tasks.make_tasks(size, difficulty, seed)]


def warm_start_data(config, tokenizer) -> tuple[list[list[int]], list[list[int]]]:
  """(prompt ids, reference response ids + <|im_end|>) of the demo training set, for the warm start."""
  d = config.data
  end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  responses = [tokenizer(s, add_special_tokens=False)["input_ids"] + [end]
               for s in demo_solutions(d.demo_size, d.demo_difficulty, d.shuffle_seed)]
  return templates.prompt_ids(train_records(config), tokenizer), responses


def check_prompt_lengths(key: str, prompts: list[list[int]], max_new_tokens: int, cfg: ModelConfig) -> None:
  """Every prompt leaves room for max_new_tokens within the model's positions (config key named on failure)."""
  longest = max((len(p) for p in prompts), default=0)
  if longest + max_new_tokens > cfg.max_position_embeddings:
    raise ConfigValueError(f"config.rollout.max_new_tokens: {max_new_tokens} plus the longest {key} prompt "
                           f"({longest} tokens) exceeds the model's max_position_embeddings="
                           f"{cfg.max_position_embeddings}")


def rollout_decode_config(config, stops: tuple[int, ...], greedy: bool = False, threshold: float | None = None,
                          dtype: str | None = None) -> DecodeConfig:
  """The rollout's decoding settings (config_parts.decode_config)."""
  return config_parts.decode_config(config, stops, greedy, threshold, dtype)
