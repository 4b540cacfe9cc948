"""Model shapes shared by the benchmarks: named presets (SPEC §2 table) and `--layers ...` flags overriding them."""

from __future__ import annotations

import argparse

from absl import flags

from lrl_jax.model import ModelConfig

PRESETS = {
    "cpu-small": dict(layers=4, hidden=512, heads=8, kv_heads=4, head_dim=64, intermediate=1536, vocab=4096),
    "sdar-1.7b": dict(layers=28, hidden=2048, heads=16, kv_heads=8, head_dim=128, intermediate=6144, vocab=151936),
    "sdar-4b": dict(layers=36, hidden=2560, heads=32, kv_heads=8, head_dim=128, intermediate=9728, vocab=151936),
    "sdar-8b": dict(layers=36, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936),
    # SDAR-30B-A3B: every layer a 128-expert top-8 MoE block of width 768 (intermediate: the config's unused dense one)
    "sdar-30b-a3b": dict(layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128, intermediate=6144, vocab=151936,
                         experts=128, top_k=8, moe_intermediate=768),
}
SHAPE_FLAGS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab")


def define_shape_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("preset", "cpu-small", sorted(PRESETS), "model shape", flag_values=fv)
  for name in SHAPE_FLAGS:
    flags.DEFINE_integer(name, None, "overrides the preset", lower_bound=1, flag_values=fv)


def model_config(args: argparse.Namespace) -> ModelConfig:
  """The preset's shape with any explicit flag applied; random-weight models use the last id as mask token."""
  shape = {**PRESETS[args.preset], **{k: getattr(args, k) for k in SHAPE_FLAGS if getattr(args, k) is not None}}
  return shape_config(shape, args.block_size)


def preset_config(name: str, block_size: int) -> ModelConfig:
  """ModelConfig of preset `name` (a KeyError names an unknown one)."""
  return shape_config(PRESETS[name], block_size)


def shape_config(shape: dict, block_size: int) -> ModelConfig:
  moe = dict(num_experts=shape["experts"], num_experts_per_tok=shape["top_k"], norm_topk_prob=True,
             moe_intermediate_size=shape["moe_intermediate"], model_type="sdar_moe") if "experts" in shape else {}
  return ModelConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                     num_layers=shape["layers"], num_heads=shape["heads"], num_kv_heads=shape["kv_heads"],
                     head_dim=shape["head_dim"], block_size=block_size, mask_token_id=shape["vocab"] - 1, **moe)


def shape_name(args: argparse.Namespace) -> str:
  """The preset's name, noting which shape flags overrode it."""
  overridden = [k for k in SHAPE_FLAGS if getattr(args, k) is not None]
  return f"{args.preset} with --{', --'.join(overridden)} overridden" if overridden else args.preset
