"""Range and choice checks of one setting, shared by the typed config parts and the config schema (defaults.py).

A failed check raises `FieldError` naming the setting (`block_size: must be >= 1, got 0`); where the setting came
from a config file, `keyed` re-raises it as a `ConfigValueError` naming the config key (`config.rollout.block_size:
...`). No dependencies beyond errors.py, so every stage's config part can use it.
"""

from __future__ import annotations

import contextlib
import math
import numbers

from lrl_jax.errors import UserError


class FieldError(UserError):
  """A setting out of range or not one of its choices: `field` names it, `text` says what is wrong."""

  def __init__(self, field: str, text: str):
    super().__init__(f"{field}: {text}")
    self.field, self.text = field, text


def check_int(field: str, value, low: int | None = None, high: int | None = None, why: str = "",
              error: type[FieldError] = FieldError) -> int:
  """An integer (not a bool) in [low, high] (None: unbounded); `why` is appended to the out-of-range message."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise error(field, f"must be an integer, got {value!r}")
  if (low is not None and value < low) or (high is not None and value > high):
    bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
    raise error(field, f"must be {bounds}, got {value}{why}")
  return value


def check_float(field: str, value, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False, why: str = "", error: type[FieldError] = FieldError) -> float:
  """A finite number in the range, each end open or closed (None: unbounded)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise error(field, f"must be a number, got {value!r}")
  if not math.isfinite(value):
    raise error(field, f"must be finite, got {value}")
  below = low is not None and (value <= low if low_open else value < low)
  above = high is not None and (value >= high if high_open else value > high)
  if below or above:
    left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    bounds = f"in {left}, {right}" if low is not None and high is not None else (
      f"{'>' if low_open else '>='} {low:g}" if high is None else f"{'<' if high_open else '<='} {high:g}")
    raise error(field, f"must be {bounds}, got {value:g}{why}")
  return value


def check_choice(field: str, value, choices, error: type[FieldError] = FieldError):
  """One of `choices`."""
  if value not in choices:
    raise error(field, f"must be one of {tuple(choices)}, got {value!r}")
  return value


class ConfigValueError(UserError):
  """A config value out of range, of the wrong kind, or contradicting another; the message starts with its key."""


@contextlib.contextmanager
def keyed(prefix: str = "", renamed: dict | None = None):
  """Re-raise a FieldError as a ConfigValueError naming the config key: `config.` + `prefix + field`, or + the key
  `renamed` gives the field (a typed part's field may come from another section)."""
  try:
    yield
  except FieldError as e:
    raise ConfigValueError(f"config.{(renamed or {}).get(e.field, prefix + e.field)}: {e.text}") from None
