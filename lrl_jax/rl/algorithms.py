"""The RL algorithms of SPEC §7.5 by name: what each changes in the LightningRL shaping (§7.3) and loss (§7.4)."""

from __future__ import annotations

from typing import NamedTuple


class Algorithm(NamedTuple):
  """ShapingConfig and LossConfig fields whose values differ from the LightningRL defaults (the dataclasses')."""
  shaping: dict
  loss: dict


# grpo/grpo_traj: accuracy reward only, advantages per prompt group, no TPF filter, no NLL term.
_GRPO_SHAPING = dict(tpf_coefficient=0.0, filter_tpf_threshold=0.0, adv_norm_mode="prompt_group")
SETTINGS = {
    "lightningrl": Algorithm({}, {}),
    "grpo": Algorithm(_GRPO_SHAPING, dict(nll_loss_weight=0.0)),
    "grpo_traj": Algorithm({**_GRPO_SHAPING, "logp_mode": "trajectory"}, dict(nll_loss_weight=0.0)),
}
ALGORITHMS = tuple(SETTINGS)


def settings(name: str) -> Algorithm:
  """The changes of algorithm `name`; a ValueError names an unknown one."""
  if name not in SETTINGS:
    raise ValueError(f"unknown algorithm {name!r}; expected one of {ALGORITHMS}")
  return SETTINGS[name]
