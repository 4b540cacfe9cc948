"""The plan's inputs checked before any compile: the config's values, the model (a preset, the checkpoint's
config.json or model.tiny), the mesh on the target's devices, and the response-length flag. Bad input raises
PlanError naming the flag or config key."""

from __future__ import annotations

import copy

from lrl_jax.errors import UserError
from lrl_jax.model.config import ConfigError, ModelConfig, load_config
from lrl_jax.model.presets import PRESETS, preset_config
from lrl_jax.parallel.mesh import AXES
from lrl_jax.plan import targets
from lrl_jax.run import validate as checks_of_config
from lrl_jax.weights import tiny

# Sections of `run.validate.validate` that read no files and no local devices: planning needs neither the checkpoint's
# weights and tokenizer, the data, nor the target's devices on this host (`check_model_fit` does the model's part).
CHECKS = ("check_run", "check_model", "check_rl", "check_loss", "check_optim", "check_train")


class PlanError(UserError):
  """Bad input: `key` (a flag or config key) and what is wrong with it."""

  def __init__(self, key: str, message: str):
    super().__init__(f"{key}: {message}")


def validate(config) -> None:
  """The config's values as the trainer checks them, the checkpoint left out (`model_config` reads its config.json)."""
  c = copy.deepcopy(config)
  c.model.checkpoint = ""
  for name in CHECKS:
    getattr(checks_of_config, name)(c)


def check_model_fit(config, cfg: ModelConfig, prompt_len: int) -> None:
  """Rollout sizes against the planned model (not the checkpoint's, when a preset replaces it)."""
  r = config.rollout
  for key, value in (("rollout.batch_size", r.batch_size), ("rollout.num_prompts", r.num_prompts),
                     ("rollout.num_responses", r.num_responses), ("rollout.max_new_tokens", r.max_new_tokens)):
    if value < 1:
      raise PlanError(key, f"{value} must be positive")
  if prompt_len + r.max_new_tokens > cfg.max_position_embeddings:
    raise PlanError("rollout.max_new_tokens", f"{r.max_new_tokens} + --prompt_len={prompt_len} exceeds the model's "
                    f"max_position_embeddings={cfg.max_position_embeddings}")


def model_config(config, preset: str | None) -> tuple[ModelConfig, str]:
  """(ModelConfig, its name): a preset, the checkpoint's config.json (no weights read), or model.tiny."""
  block = config.rollout.block_size
  if preset:
    if preset not in PRESETS:
      raise PlanError("--preset", f"{preset!r} is not one of {', '.join(sorted(PRESETS))}")
    return preset_config(preset, block), preset
  if config.model.checkpoint:
    try:
      return load_config(config.model.checkpoint), config.model.checkpoint
    except ConfigError as e:
      raise PlanError("model.checkpoint", str(e)) from None
  return tiny.tiny_config(block_size=block, **config.model.tiny.to_dict()), "model.tiny"


def mesh_shape(config, target: targets.Target) -> tuple[int, int, int, int]:
  """(data, fsdp, expert, tensor) of config.mesh on the target's devices (one axis may be -1: the devices left
  over)."""
  sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.get("expert", 1), config.mesh.tensor]
  known = 1
  for s in sizes:
    known *= s if s != -1 else 1
  n = target.num_devices
  if sizes.count(-1) > 1 or n % known or (-1 not in sizes and known != n):
    raise PlanError("mesh", f"({', '.join(f'{a}={s}' for a, s in zip(AXES, sizes))}) does not factor the {n} "
                    f"devices of {target.name}")
  return tuple(n // known if s == -1 else s for s in sizes)


def parse_response_tokens(text: str) -> tuple[float, float] | None:
  """`--response_tokens`: "" (None: every response at max_new_tokens) or "MEDIAN,SIGMA" of a log-normal."""
  if not str(text).strip():
    return None
  parts = str(text).split(",")
  try:
    median, sigma = (float(p) for p in parts)
  except ValueError:
    median = sigma = -1.0
  if len(parts) != 2 or median <= 0 or sigma < 0:
    raise PlanError("--response_tokens", f"{text!r}: expected MEDIAN,SIGMA with MEDIAN > 0 and SIGMA >= 0, "
                    "e.g. 350,0.8")
  return median, sigma
