"""The one conversion of a training config (defaults.py's ConfigDict) to the stages' typed parts.

Shaping and loss: the algorithm's settings (rl/algorithms.py) with every value the config sets (not None) over them;
each part checks its own ranges when built, and a bad value is reported under its config key (`config.rl.x: ...`).
Decoding: the rollout section and the compute dtype.
"""

from __future__ import annotations

import dataclasses

from lrl_jax.checks import keyed
from lrl_jax.decode.config import DecodeConfig
from lrl_jax.rl import losses, shaping
from lrl_jax.rl.losses import LossConfig
from lrl_jax.rl.shaping import ShapingConfig


def _explicit(section, part) -> dict:
  """The values of `section` set in the config (not None) that are fields of the dataclass `part`."""
  fields = {f.name for f in dataclasses.fields(part)}
  return {k: v for k, v in section.to_dict().items() if v is not None and k in fields}


def shaping_config(config) -> ShapingConfig:
  """config.algorithm's shaping settings (SPEC §7.5) with every value set in config.rl over them."""
  with keyed("rl."):
    return dataclasses.replace(shaping.for_algorithm(config.algorithm), **_explicit(config.rl, ShapingConfig))


def loss_config(config) -> LossConfig:
  """config.algorithm's loss settings (SPEC §7.5) with every value set in config.loss over them."""
  with keyed("loss."):
    return dataclasses.replace(losses.for_algorithm(config.algorithm), **_explicit(config.loss, LossConfig))


def decode_config(config, stops: tuple[int, ...], greedy: bool = False, threshold: float | None = None,
                  dtype: str | None = None) -> DecodeConfig:
  """The rollout's decoding settings (config.rollout, compute dtype model.dtype) with these stop ids; evaluation
  decodes greedily at its own threshold. Not validated here: `check_rollout` and the Decoder do."""
  r = config.rollout
  return DecodeConfig(block_size=r.block_size, steps=r.steps or None, strategy=r.strategy,
                      threshold=r.threshold if threshold is None else threshold, temperature=r.temperature,
                      top_k=r.top_k, top_p=r.top_p, greedy=greedy, max_new_tokens=r.max_new_tokens,
                      stop_ids=stops, dtype=dtype or config.model.dtype)
