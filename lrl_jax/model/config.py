"""Model configuration of SDAR (a Qwen3 decoder used as a block-diffusion LM), read from an HF config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("sdar", "qwen3", "sdar_moe", "qwen3_moe")
SDAR_TYPES = ("sdar", "sdar_moe")  # block_size and mask_token_id required


class ConfigError(ValueError):
  """A config.json that is missing a field or contradicts itself; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture hyper-parameters; hashable so it can be a static argument of jitted functions."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 1e6
  rms_norm_eps: float = 1e-6
  max_position_embeddings: int = 32768
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  block_size: int | None = None
  mask_token_id: int | None = None
  model_type: str = "sdar"
  # RMSNorm's weight multiplied in float32, one cast after (the SDAR modeling's fused kernel, SGLang); False:
  # transformers' Qwen3 (cast, then weight). Differs only below float32; not read from config.json (docs/DECODE.md)
  norm_weight_fp32: bool = True
  # mixture of experts (model_type sdar_moe / qwen3_moe; every layer sparse): 0 experts = the dense MLP
  num_experts: int = 0
  num_experts_per_tok: int = 0
  moe_intermediate_size: int = 0
  norm_topk_prob: bool = False

  @property
  def is_moe(self) -> bool:
    return self.num_experts > 0

  def to_hf_dict(self) -> dict[str, Any]:
    """The config.json fields an HF loader needs (model_type qwen3 keeps transformers able to load the weights)."""
    out = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "rope_theta": self.rope_theta,
        "rms_norm_eps": self.rms_norm_eps,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "attention_bias": self.attention_bias,
        "hidden_act": "silu",
    }
    if self.is_moe:
      out.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", num_experts=self.num_experts,
                 num_experts_per_tok=self.num_experts_per_tok, moe_intermediate_size=self.moe_intermediate_size,
                 norm_topk_prob=self.norm_topk_prob, decoder_sparse_step=1, mlp_only_layers=[])
    if self.block_size is not None:
      out["block_size"] = self.block_size
    if self.mask_token_id is not None:
      out["mask_token_id"] = self.mask_token_id
    return out


def _require(raw: dict, key: str, path: str, kind: type) -> Any:
  if key not in raw or raw[key] is None:
    raise ConfigError(f"{path}: missing required key '{key}'")
  value = raw[key]
  if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
    raise ConfigError(f"{path}: key '{key}' must be an integer, got {value!r}")
  if kind is float and not isinstance(value, (int, float)):
    raise ConfigError(f"{path}: key '{key}' must be a number, got {value!r}")
  return kind(value)


def _rope_theta(raw: dict, path: str) -> float:
  """rope_theta lives at top level (SDAR, transformers 4) or under rope_parameters (transformers 5)."""
  params = raw.get("rope_parameters") or {}
  scaling = raw.get("rope_scaling") or {}
  for source, where in ((params, "rope_parameters"), (scaling, "rope_scaling")):
    rope_type = source.get("rope_type", source.get("type", "default"))
    if rope_type != "default":
      raise ConfigError(f"{path}: key '{where}.rope_type' = {rope_type!r} is not supported (only 'default' RoPE)")
  if "rope_theta" in raw:
    return _require(raw, "rope_theta", path, float)
  if "rope_theta" in params:
    return float(params["rope_theta"])
  raise ConfigError(f"{path}: missing required key 'rope_theta' (top level or in 'rope_parameters')")


def config_from_dict(raw: dict, path: str = "config.json") -> ModelConfig:
  """Validate an HF config dict; every problem is one ConfigError naming `path` and the key."""
  model_type = raw.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConfigError(f"{path}: key 'model_type' = {model_type!r} is not supported (expected one of {SUPPORTED_MODEL_TYPES})")
  heads = _require(raw, "num_attention_heads", path, int)
  hidden = _require(raw, "hidden_size", path, int)
  kv_heads = raw.get("num_key_value_heads")
  kv_heads = heads if kv_heads is None else _require(raw, "num_key_value_heads", path, int)
  head_dim = raw.get("head_dim")
  head_dim = hidden // heads if head_dim is None else _require(raw, "head_dim", path, int)
  vocab = _require(raw, "vocab_size", path, int)
  if model_type in SDAR_TYPES:
    block_size = _require(raw, "block_size", path, int)
    mask_token_id = _require(raw, "mask_token_id", path, int)
  else:
    block_size = _require(raw, "block_size", path, int) if raw.get("block_size") is not None else None
    mask_token_id = _require(raw, "mask_token_id", path, int) if raw.get("mask_token_id") is not None else None
  cfg = ModelConfig(
      vocab_size=vocab,
      hidden_size=hidden,
      intermediate_size=_require(raw, "intermediate_size", path, int),
      num_layers=_require(raw, "num_hidden_layers", path, int),
      num_heads=heads,
      num_kv_heads=kv_heads,
      head_dim=head_dim,
      rope_theta=_rope_theta(raw, path),
      rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
      max_position_embeddings=int(raw.get("max_position_embeddings", 32768)),
      tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
      attention_bias=bool(raw.get("attention_bias", False)),
      block_size=block_size,
      mask_token_id=mask_token_id,
      model_type=model_type,
      **_moe_fields(raw, path),
  )
  _check_consistency(cfg, raw, path)
  return cfg


def _moe_fields(raw: dict, path: str) -> dict:
  """MoE keys of a Qwen3-MoE / SDAR-MoE config (transformers 5 writes num_experts as num_local_experts); a dense
  config gives none. Only homogeneous stacks are supported: every layer sparse (the released SDAR-30B-A3B) or none."""
  experts_key = "num_experts" if raw.get("num_experts") is not None else "num_local_experts"
  if raw.get("model_type") not in ("sdar_moe", "qwen3_moe") or not raw.get(experts_key):
    return {}
  experts = _require(raw, experts_key, path, int)
  layers = _require(raw, "num_hidden_layers", path, int)
  step = int(raw.get("decoder_sparse_step", 1))
  if step <= 0:
    raise ConfigError(f"{path}: key 'decoder_sparse_step' must be positive, got {step}")
  dense_only = set(raw.get("mlp_only_layers") or [])
  sparse = [i for i in range(layers) if i not in dense_only and (i + 1) % step == 0]
  if len(sparse) == 0:
    return {}
  if len(sparse) != layers:
    raise ConfigError(f"{path}: keys 'decoder_sparse_step' = {step} / 'mlp_only_layers' = {sorted(dense_only)} mix "
                      f"dense and sparse layers; only all-sparse stacks are supported (decoder_sparse_step 1, "
                      f"mlp_only_layers [])")
  fields = dict(num_experts=experts, num_experts_per_tok=_require(raw, "num_experts_per_tok", path, int),
                moe_intermediate_size=_require(raw, "moe_intermediate_size", path, int),
                norm_topk_prob=bool(raw.get("norm_topk_prob", False)))
  for key in ("num_experts_per_tok", "moe_intermediate_size"):
    if fields[key] <= 0:
      raise ConfigError(f"{path}: key '{key}' must be positive, got {fields[key]}")
  if fields["num_experts_per_tok"] > experts:
    raise ConfigError(f"{path}: key 'num_experts_per_tok' = {fields['num_experts_per_tok']} exceeds "
                      f"{experts_key} = {experts}")
  return fields


def _check_consistency(cfg: ModelConfig, raw: dict, path: str) -> None:
  for key, value in (("vocab_size", cfg.vocab_size), ("hidden_size", cfg.hidden_size),
                     ("intermediate_size", cfg.intermediate_size), ("num_hidden_layers", cfg.num_layers),
                     ("num_attention_heads", cfg.num_heads), ("num_key_value_heads", cfg.num_kv_heads),
                     ("head_dim", cfg.head_dim)):
    if value <= 0:
      raise ConfigError(f"{path}: key '{key}' must be positive, got {value}")
  if cfg.num_heads % cfg.num_kv_heads:
    raise ConfigError(f"{path}: key 'num_key_value_heads' = {cfg.num_kv_heads} does not divide "
                      f"num_attention_heads = {cfg.num_heads}")
  if cfg.head_dim % 2:
    raise ConfigError(f"{path}: key 'head_dim' = {cfg.head_dim} must be even for RoPE")
  if cfg.mask_token_id is not None and not 0 <= cfg.mask_token_id < cfg.vocab_size:
    raise ConfigError(f"{path}: key 'mask_token_id' = {cfg.mask_token_id} is outside the vocabulary "
                      f"(vocab_size = {cfg.vocab_size})")
  if cfg.block_size is not None and cfg.block_size <= 0:
    raise ConfigError(f"{path}: key 'block_size' must be positive, got {cfg.block_size}")
  if raw.get("use_sliding_window"):
    raise ConfigError(f"{path}: key 'use_sliding_window' = true is not supported")
  act = raw.get("hidden_act", "silu")
  if act != "silu":
    raise ConfigError(f"{path}: key 'hidden_act' = {act!r} is not supported (expected 'silu')")


def load_config(path: str) -> ModelConfig:
  """Read and validate `path` (a config.json file or a directory holding one)."""
  if os.path.isdir(path):
    path = os.path.join(path, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{path}: file not found")
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(raw, dict):
    raise ConfigError(f"{path}: expected a JSON object")
  return config_from_dict(raw, path)
