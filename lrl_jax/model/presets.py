"""Named model shapes (SPEC §2 table) for random-weight benchmarks and deviceless plans: name -> ModelConfig fields."""

from __future__ import annotations

from lrl_jax.model.config import ModelConfig

_QWEN3_VOCAB = 151936
PRESETS = {
    "cpu-small": dict(num_layers=4, hidden_size=512, num_heads=8, num_kv_heads=4, head_dim=64, intermediate_size=1536,
                      vocab_size=4096),
    "sdar-1.7b": dict(num_layers=28, hidden_size=2048, num_heads=16, num_kv_heads=8, head_dim=128,
                      intermediate_size=6144, vocab_size=_QWEN3_VOCAB),
    "sdar-4b": dict(num_layers=36, hidden_size=2560, num_heads=32, num_kv_heads=8, head_dim=128, intermediate_size=9728,
                    vocab_size=_QWEN3_VOCAB),
    "sdar-8b": dict(num_layers=36, hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                    intermediate_size=12288, vocab_size=_QWEN3_VOCAB),
    # every layer a 128-expert top-8 MoE block of width 768 (intermediate_size: the config's unused dense width)
    "sdar-30b-a3b": dict(num_layers=48, hidden_size=2048, num_heads=32, num_kv_heads=4, head_dim=128,
                         intermediate_size=6144, vocab_size=_QWEN3_VOCAB, num_experts=128, num_experts_per_tok=8,
                         moe_intermediate_size=768, norm_topk_prob=True, model_type="sdar_moe"),
}


def make_config(fields: dict, block_size: int) -> ModelConfig:
  """ModelConfig of these fields at `block_size`; random weights use the last id as the mask token."""
  return ModelConfig(**fields, block_size=block_size, mask_token_id=fields["vocab_size"] - 1)


def preset_config(name: str, block_size: int) -> ModelConfig:
  """ModelConfig of preset `name` (a KeyError names an unknown one)."""
  return make_config(PRESETS[name], block_size)
