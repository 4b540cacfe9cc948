"""Model shapes shared by the benchmarks: named presets (SPEC §2 table) and `--layers ...` flags overriding them."""

from __future__ import annotations

import argparse

from lrl_jax.model import ModelConfig

PRESETS = {
    "cpu-small": dict(layers=4, hidden=512, heads=8, kv_heads=4, head_dim=64, intermediate=1536, vocab=4096),
    "sdar-1.7b": dict(layers=28, hidden=2048, heads=16, kv_heads=8, head_dim=128, intermediate=6144, vocab=151936),
    "sdar-8b": dict(layers=36, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936),
}
SHAPE_FLAGS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab")


def add_shape_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
  for name in SHAPE_FLAGS:
    p.add_argument(f"--{name}", type=int, help="overrides the preset")


def model_config(args: argparse.Namespace) -> ModelConfig:
  """The preset's shape with any explicit flag applied; random-weight models use the last id as mask token."""
  shape = {**PRESETS[args.preset], **{k: getattr(args, k) for k in SHAPE_FLAGS if getattr(args, k) is not None}}
  return ModelConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                     num_layers=shape["layers"], num_heads=shape["heads"], num_kv_heads=shape["kv_heads"],
                     head_dim=shape["head_dim"], block_size=args.block_size, mask_token_id=shape["vocab"] - 1)


def shape_name(args: argparse.Namespace) -> str:
  """The preset's name, noting which shape flags overrode it."""
  overridden = [k for k in SHAPE_FLAGS if getattr(args, k) is not None]
  return f"{args.preset} with --{', --'.join(overridden)} overridden" if overridden else args.preset
