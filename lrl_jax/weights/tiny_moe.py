"""Tiny SDAR-MoE checkpoints (the SDAR-30B-A3B layout in miniature), built offline with transformers' Qwen3-MoE.

The weights come from an independent implementation (torch, random init) and are saved by transformers in the hub's
per-expert layout (`mlp.experts.{e}.{gate,up,down}_proj.weight`, `mlp.gate.weight`); config.json is written the way
the hub's SDAR-30B-A3B writes it (model_type "sdar_moe", `SDARMoeForCausalLM`, remote-code auto_map, transformers
4.52 key names), so loading it proves that no remote code and no transformers-5 key names are needed.
"""

from __future__ import annotations

import dataclasses
import json
import os

from lrl_jax.model.config import ModelConfig
from lrl_jax.weights import tiny


def tiny_moe_config(num_experts: int = 8, top_k: int = 2, norm_topk_prob: bool = True, moe_intermediate_size: int = 32,
                    **kwargs) -> ModelConfig:
  """`tiny.tiny_config` (char-tokenizer ids, mask id 3) with every layer a sparse MoE block."""
  return dataclasses.replace(tiny.tiny_config(**kwargs), num_experts=num_experts, num_experts_per_tok=top_k,
                             moe_intermediate_size=moe_intermediate_size, norm_topk_prob=norm_topk_prob,
                             model_type="sdar_moe")


def hub_moe_config_json(cfg: ModelConfig, dtype: str = "float32") -> dict:
  """config.json as the hub's SDAR-30B-A3B writes it (SDARMoeConfig, transformers 4.52: `num_experts`)."""
  return {
      "architectures": ["SDARMoeForCausalLM"], "attention_bias": cfg.attention_bias, "attention_dropout": 0.0,
      "auto_map": {"AutoConfig": "configuration_sdar_moe.SDARMoeConfig",
                   "AutoModel": "modeling_sdar_moe.SDARMoeModel",
                   "AutoModelForCausalLM": "modeling_sdar_moe.SDARMoeForCausalLM"},
      "block_size": cfg.block_size, "bos_token_id": 0, "decoder_sparse_step": 1, "eos_token_id": 2,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "hidden_size": cfg.hidden_size, "initializer_range": 0.02,
      "intermediate_size": cfg.intermediate_size, "mask_token_id": cfg.mask_token_id,
      "max_position_embeddings": cfg.max_position_embeddings, "max_window_layers": cfg.num_layers,
      "mlp_only_layers": [], "model_type": "sdar_moe", "moe_intermediate_size": cfg.moe_intermediate_size,
      "norm_topk_prob": cfg.norm_topk_prob, "num_attention_heads": cfg.num_heads, "num_experts": cfg.num_experts,
      "num_experts_per_tok": cfg.num_experts_per_tok, "num_hidden_layers": cfg.num_layers,
      "num_key_value_heads": cfg.num_kv_heads, "output_router_logits": False, "pad_token_id": 0,
      "rms_norm_eps": cfg.rms_norm_eps, "rope_scaling": None, "rope_theta": cfg.rope_theta,
      "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": cfg.tie_word_embeddings,
      "torch_dtype": dtype, "transformers_version": "4.52.4", "use_cache": True, "use_sliding_window": False,
      "vocab_size": cfg.vocab_size,
  }


def make_hf_moe_checkpoint(out_dir: str, cfg: ModelConfig, seed: int = 0, dtype: str = "float32",
                           max_shard_size: str | int = "5GB", init_std: float = 0.02, router_std: float = 1.0) -> str:
  """Random-init transformers Qwen3-MoE → per-expert safetensors + the hub's SDAR-MoE config.json + char tokenizer.

  Norm weights are random around 1 and the router gets `router_std` so that top-k choices have clear margins.
  """
  import torch
  from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

  torch.manual_seed(seed)
  raw = {k: v for k, v in cfg.to_hf_dict().items() if k not in ("block_size", "mask_token_id")}
  model = Qwen3MoeForCausalLM(Qwen3MoeConfig(initializer_range=init_std, **raw)).to(getattr(torch, dtype))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      elif name.endswith("mlp.gate.weight"):
        p.copy_(router_std * torch.randn_like(p))
  model.save_pretrained(out_dir, max_shard_size=max_shard_size)
  tiny.char_tokenizer().save_pretrained(out_dir)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hub_moe_config_json(cfg, dtype), f, indent=2)
  with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": [2, 0], "pad_token_id": 0}, f, indent=2)
  return out_dir
