"""Refill of filtered groups (SPEC §7.3 `rl.resample_filtered`, the paper's accept-reject resampling); host-side.

When the filters drop groups, more prompts are drawn from the sampler, rolled out and judged, and the groups that pass
are added, until the step holds `num_prompts` kept groups or `MAX_EXTRA_ROUNDS` extra rounds are spent. Round `r`
of step `k` samples from `rollout_seed(seed, k, r)` and the sampler cursor (checkpointed) advances by every draw, so
a resumed run repeats the same rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lrl_jax.rl import shaping

MAX_EXTRA_ROUNDS = 3


class Round(NamedTuple):
  """Judged responses of one rollout round, flat over responses [n]; responses of one prompt share a `group` id."""
  group: np.ndarray  # [n] int
  records: list  # [n] the responses (the trainer's rollout.Response, each with its typed Record where decoded)
  data: list  # [n] the dataset item each response answers (judged against)
  correct: np.ndarray  # [n] float: correctness (code: pass rate)
  tpf: np.ndarray  # [n] float: tokens per forward


def rollout_seed(seed: int, step: int, round_index: int) -> int:
  """Decoder seed of a rollout round: round 0 keeps the trainer's `seed * 1_000_003 + step`; extra rounds hash
  (seed, step, round) to a 31-bit seed."""
  if round_index == 0:
    return seed * 1_000_003 + step
  return int(np.random.SeedSequence([seed, step, round_index]).generate_state(1)[0] >> 1)


def kept_groups(batch: Round, cfg: shaping.ShapingConfig) -> int:
  """Number of groups of `batch` that pass the §7.3 filters."""
  return shaping.filter_groups(batch.group, batch.correct, batch.tpf, cfg.filter_all_wrong,
                               cfg.filter_tpf_threshold)[1]["kept"]


def merge(rounds: list[Round]) -> Round:
  """One Round of all rounds' responses; group ids become 0..total_groups-1 in round order."""
  groups, offset = [], 0
  for r in rounds:
    inverse = np.unique(r.group, return_inverse=True)[1].reshape(-1)
    groups.append(inverse + offset)
    offset += int(inverse.max()) + 1 if len(inverse) else 0
  return Round(np.concatenate(groups), [x for r in rounds for x in r.records], [x for r in rounds for x in r.data],
               np.concatenate([r.correct for r in rounds]), np.concatenate([r.tpf for r in rounds]))


def refill(first: Round, roll: Callable[[int, int], Round], cfg: shaping.ShapingConfig, num_prompts: int,
           max_rounds: int = MAX_EXTRA_ROUNDS) -> tuple[Round, int]:
  """(merged round, extra rounds run): while fewer than `num_prompts` groups pass, `roll(r, missing)` draws and
  judges `missing` more prompts in round r = 1, 2, ...; every draw is kept in the batch (filtered groups are then
  dropped by `shaping.shape` as usual), so at most `num_prompts` groups are kept."""
  rounds, kept = [first], kept_groups(first, cfg)
  while kept < num_prompts and len(rounds) <= max_rounds:
    rounds.append(roll(len(rounds), num_prompts - kept))
    kept += kept_groups(rounds[-1], cfg)
  return merge(rounds), len(rounds) - 1
