"""Decoding settings (SPEC §4), hashable so they can be static arguments of the jitted decode loop."""

from __future__ import annotations

import dataclasses

from lrl_jax.checks import FieldError, check_choice, check_float, check_int

PALLAS_PLATFORMS = ("gpu", "tpu")  # platforms with a compiled paged-prefix kernel (model/pallas_*paged.py)
STRATEGIES = ("sequential", "low_confidence_static", "low_confidence_dynamic", "entropy_bounded")
DTYPES = ("float32", "bfloat16")  # compute dtypes of decoding and training (config model.dtype)
ATTN_IMPLS = ("xla", "pallas")  # paged-prefix attention backends; "auto" picks one per platform (`for_platform`)
ATTN_CHOICES = ATTN_IMPLS + ("auto",)


class DecodeError(ValueError):
  """Unusable decoding settings or inputs; the message names the setting and its value."""


class DecodeSettingError(FieldError, DecodeError):
  """One DecodeConfig setting out of range (`field: what is wrong`)."""


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """Block size B, denoising steps S per block (None = B), strategy, threshold θ, sampling and stopping."""

  block_size: int = 32
  steps: int | None = None
  strategy: str = "low_confidence_dynamic"
  threshold: float = 0.9
  entropy_budget: float = 0.35
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  greedy: bool = False
  max_new_tokens: int = 512
  stop_ids: tuple[int, ...] = ()
  dtype: str = "float32"
  attn_impl: str = "auto"  # xla | pallas | auto (`for_platform`: the Pallas kernel on GPU and TPU, elsewhere xla)

  @property
  def num_steps(self) -> int:
    return self.steps or self.block_size

  @property
  def is_greedy(self) -> bool:
    return self.greedy or self.temperature == 0

  def compiled(self) -> "DecodeConfig":
    """The settings the engine is compiled for: θ is a runtime argument of the engine (`engine.run`), so it is left
    out of the static key and one program serves every threshold."""
    return dataclasses.replace(self, threshold=0.0)

  def for_platform(self, platform: str) -> "DecodeConfig":
    """attn_impl "auto" resolved for the platform ("gpu", "tpu", "cpu") of the devices the engine is compiled for:
    the Pallas paged kernel where one lowers (Triton on GPU, Mosaic on TPU), the XLA page walk elsewhere."""
    if self.attn_impl != "auto":
      return self
    return dataclasses.replace(self, attn_impl="pallas" if platform in PALLAS_PLATFORMS else "xla")

  def validate(self) -> "DecodeConfig":
    """Raise DecodeSettingError (a DecodeError) naming the first bad setting; return self."""
    err = DecodeSettingError
    check_int("block_size", self.block_size, 1, error=err)
    if self.steps is not None:
      check_int("steps", self.steps, 0, self.block_size, why=" (0 = block_size; at most block_size)", error=err)
    check_choice("strategy", self.strategy, STRATEGIES, error=err)
    check_float("threshold", self.threshold, 0.0, 1.0, error=err)
    check_float("temperature", self.temperature, 0.0, error=err)
    check_int("top_k", self.top_k, 0, error=err)
    check_float("top_p", self.top_p, 0.0, 1.0, low_open=True, error=err)
    check_int("max_new_tokens", self.max_new_tokens, 1, error=err)
    check_choice("attn_impl", self.attn_impl, ATTN_CHOICES, error=err)
    check_choice("dtype", self.dtype, DTYPES, error=err)
    return self

  def check_model(self, model_block_size: int | None, mask_token_id: int | None, vocab_size: int) -> None:
    """Model-dependent checks: a mask token exists, block sizes agree, stop ids are in the vocabulary."""
    if mask_token_id is None:
      raise DecodeError("the checkpoint's config.json has no 'mask_token_id'; block diffusion needs a mask token")
    if model_block_size and (model_block_size % self.block_size and self.block_size % model_block_size):
      raise DecodeSettingError("block_size", f"{self.block_size} and the model's block_size={model_block_size} do "
                               "not divide one another")
    for sid in self.stop_ids:
      if not 0 <= sid < vocab_size:
        raise DecodeSettingError("stop_ids", f"stop id {sid} is outside the vocabulary (size {vocab_size})")
