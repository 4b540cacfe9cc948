"""Model shapes of the benchmarks: a named preset (model/presets.py) with `--layers ...` flags overriding it."""

from __future__ import annotations

import argparse

from absl import flags

from lrl_jax.model import ModelConfig
from lrl_jax.model.presets import PRESETS, make_config, preset_config

# flag -> the ModelConfig field it overrides
SHAPE_FLAGS = {"layers": "num_layers", "hidden": "hidden_size", "heads": "num_heads", "kv_heads": "num_kv_heads",
               "head_dim": "head_dim", "intermediate": "intermediate_size", "vocab": "vocab_size"}
__all__ = ["PRESETS", "SHAPE_FLAGS", "define_shape_flags", "model_config", "preset_config", "shape_config",
           "shape_name"]


def define_shape_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("preset", "cpu-small", sorted(PRESETS), "model shape", flag_values=fv)
  for name in SHAPE_FLAGS:
    flags.DEFINE_integer(name, None, "overrides the preset", lower_bound=1, flag_values=fv)


def model_config(args: argparse.Namespace) -> ModelConfig:
  """The preset's shape with any explicit flag applied; random-weight models use the last id as mask token."""
  fields = {**PRESETS[args.preset], **{field: getattr(args, name) for name, field in SHAPE_FLAGS.items()
                                       if getattr(args, name) is not None}}
  return make_config(fields, args.block_size)


def shape_config(shape: dict, block_size: int) -> ModelConfig:
  """ModelConfig of a shape given by flag names (`layers`, `hidden`, ...: every one of SHAPE_FLAGS)."""
  return make_config({SHAPE_FLAGS[name]: value for name, value in shape.items()}, block_size)


def shape_name(args: argparse.Namespace) -> str:
  """The preset's name, noting which shape flags overrode it."""
  overridden = [k for k in SHAPE_FLAGS if getattr(args, k) is not None]
  return f"{args.preset} with --{', --'.join(overridden)} overridden" if overridden else args.preset
