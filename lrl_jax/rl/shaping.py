"""LightningRL reward shaping, group filtering and advantages (SPEC §7.3, §7.5); numpy, host-side.

Every function takes a flat batch of `n` responses: `group` [n] ids (responses of one prompt share an id),
`correct` [n] (bool correctness, or float pass rate in [0, 1] for code), `tpf` [n] tokens per forward.
All standard deviations are population ones (ddof=0) with no epsilon: a z-score is 0 for every member of a
set whose values are all equal (detected exactly), and `(x - mean) / std` otherwise.
"""

import dataclasses
from typing import NamedTuple

import numpy as np

from lrl_jax.checks import check_choice, check_float
from lrl_jax.rl.algorithms import settings
from lrl_jax.rl.rows import MODES as LOGP_MODES

TPF_NORM_MODES = ("z_score", "minmax", "none")
ADV_NORM_MODES = ("batch", "prompt_group", "prompt_group_center")
REWARD_NORMS = ("decoupled", "joint")


@dataclasses.dataclass(frozen=True)
class ShapingConfig:
  """Shaping settings with the SPEC §7.3 defaults; `logp_mode` picks the §7.1 training rows of the algorithm."""
  acc_norm: bool = True
  tpf_norm_mode: str = "z_score"
  tpf_coefficient: float = 1.0
  filter_all_wrong: bool = True
  filter_tpf_threshold: float = 0.01
  adv_norm_mode: str = "batch"
  logp_mode: str = "block_masked"
  speed_reward_correct_only: bool = False  # extension (off = SPEC): wrong responses earn no speed reward
  reward_norm: str = "decoupled"  # SPEC; "joint": one group z-score of correctness + coefficient * tpf (ablation)

  def __post_init__(self):
    self.validate()

  def validate(self) -> "ShapingConfig":
    """Raise FieldError (a ValueError) naming the first setting out of range; return self."""
    check_choice("tpf_norm_mode", self.tpf_norm_mode, TPF_NORM_MODES)
    check_choice("adv_norm_mode", self.adv_norm_mode, ADV_NORM_MODES)
    check_choice("logp_mode", self.logp_mode, LOGP_MODES)
    check_choice("reward_norm", self.reward_norm, REWARD_NORMS)
    check_float("tpf_coefficient", self.tpf_coefficient)
    check_float("filter_tpf_threshold", self.filter_tpf_threshold, 0.0)
    return self


def for_algorithm(name: str) -> ShapingConfig:
  """Settings of the SPEC §7.5 algorithm `name` (rl/algorithms.py); a ValueError names an unknown one."""
  return ShapingConfig(**settings(name).shaping)


class Shaped(NamedTuple):
  """Per-response shaping results [n] and the filter's group counts."""
  acc_reward: np.ndarray
  speed_reward: np.ndarray
  reward: np.ndarray
  keep: np.ndarray
  advantages: np.ndarray
  counts: dict


def _group_index(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(inverse [n] into 0..num_groups-1, first member index [num_groups]) of the group ids."""
  _, first, inverse = np.unique(np.asarray(group), return_index=True, return_inverse=True)
  return inverse.reshape(-1), first


def _group_zscore(x: np.ndarray, group: np.ndarray) -> np.ndarray:
  """Within-group population z-score of x [n]; exactly 0 in a group whose values are all equal."""
  inverse, first = _group_index(group)
  num_groups = len(first)
  # Shift by the group's first member so a constant group gives exact zeros, not rounding noise.
  dev = np.asarray(x, np.float64) - np.asarray(x, np.float64)[first][inverse]
  count = np.bincount(inverse, minlength=num_groups)
  centered = dev - (np.bincount(inverse, dev, num_groups) / count)[inverse]
  std = np.sqrt(np.bincount(inverse, centered * centered, num_groups) / count)[inverse]
  return np.where(std > 0, centered / np.where(std > 0, std, 1.0), 0.0)


def _group_min_max(x: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-response (group min [n], group max [n]) of x [n]."""
  inverse, first = _group_index(group)
  lo = np.full(len(first), np.inf)
  hi = np.full(len(first), -np.inf)
  np.minimum.at(lo, inverse, x)
  np.maximum.at(hi, inverse, x)
  return lo[inverse], hi[inverse]


def is_correct(correct: np.ndarray) -> np.ndarray:
  """Binary correctness [n]: a bool as is, a pass rate counts only when every test passed (== 1)."""
  correct = np.asarray(correct)
  return correct if correct.dtype == bool else correct >= 1.0


def accuracy_reward(group: np.ndarray, correct: np.ndarray, acc_norm: bool,
                    graded: np.ndarray | None = None) -> np.ndarray:
  """Accuracy reward [n]: within-group z-score of correctness/pass rate, else +1/-1 (right/wrong) or, for the
  responses `graded` [n] by a test pass rate (code), that rate. `graded` defaults to "every one" for a float
  `correct`, "none" for a bool one."""
  correct = np.asarray(correct)
  if acc_norm:
    return _group_zscore(correct.astype(np.float64), group)
  if graded is None:
    graded = np.full(correct.shape, correct.dtype != bool)
  return np.where(graded, correct.astype(np.float64), np.where(is_correct(correct), 1.0, -1.0))


def speed_reward(group: np.ndarray, tpf: np.ndarray, mode: str, coefficient: float,
                 correct: np.ndarray | None = None) -> np.ndarray:
  """Speed reward [n] = coefficient * (group z-score | group min-max (0.5 if flat) | raw) of tpf.

  With `correct` [n], each group is normalised over its correct responses only and wrong ones get 0, so a fast
  wrong answer is never rewarded for its speed.
  """
  tpf = np.asarray(tpf, np.float64)
  if correct is not None:
    ok = is_correct(correct)
    group = np.where(ok, _group_index(group)[0], len(tpf) + np.arange(len(tpf)))  # each wrong response alone
  if mode == "z_score":
    score = _group_zscore(tpf, group)
  elif mode == "minmax":
    lo, hi = _group_min_max(tpf, group)
    score = np.where(hi > lo, (tpf - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
  elif mode == "none":
    score = tpf
  else:
    raise ValueError(f"tpf_norm_mode {mode!r} is not one of {TPF_NORM_MODES}")
  if correct is not None:
    score = np.where(ok, score, 0.0)
  return coefficient * score


def filter_groups(group: np.ndarray, correct: np.ndarray, tpf: np.ndarray, filter_all_wrong: bool,
                  tpf_threshold: float) -> tuple[np.ndarray, dict]:
  """Keep mask [n] over responses (whole groups) and group counts; an all-wrong group counts under that reason."""
  inverse, first = _group_index(group)
  num_groups = len(first)
  any_correct = np.bincount(inverse, is_correct(correct).astype(np.float64), num_groups) > 0
  lo, hi = _group_min_max(np.asarray(tpf, np.float64), group)
  spread = np.zeros(num_groups)
  spread[inverse] = hi - lo
  all_wrong = ~any_correct if filter_all_wrong else np.zeros(num_groups, bool)
  flat_tpf = ~all_wrong & (spread < tpf_threshold)
  kept = ~all_wrong & ~flat_tpf
  counts = {"groups": num_groups, "kept": int(kept.sum()), "dropped_all_wrong": int(all_wrong.sum()),
            "dropped_tpf": int(flat_tpf.sum())}
  return kept[inverse], counts


def advantages(group: np.ndarray, reward: np.ndarray, keep: np.ndarray, mode: str) -> np.ndarray:
  """Advantages [n] over kept responses (dropped ones get 0): batch z-score, group z-score, or r - group mean."""
  reward = np.asarray(reward, np.float64)
  keep = np.asarray(keep, bool)
  out = np.zeros_like(reward)
  if not keep.any():
    return out
  group_k, reward_k = np.asarray(group)[keep], reward[keep]
  if mode == "batch":
    out[keep] = _group_zscore(reward_k, np.zeros_like(group_k))
  elif mode == "prompt_group":
    out[keep] = _group_zscore(reward_k, group_k)
  elif mode == "prompt_group_center":
    inverse, first = _group_index(group_k)
    mean = np.bincount(inverse, reward_k, len(first)) / np.bincount(inverse, minlength=len(first))
    out[keep] = reward_k - mean[inverse]
  else:
    raise ValueError(f"adv_norm_mode {mode!r} is not one of {ADV_NORM_MODES}")
  return out


def joint_reward(group: np.ndarray, correct: np.ndarray, tpf: np.ndarray, coefficient: float,
                 correct_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(acc [n], speed [n], reward [n]) without decoupling (the paper's ablation): acc = correctness or pass rate,
  speed = coefficient * raw tpf (0 for wrong responses when `correct_only`), reward = group z-score of acc + speed."""
  acc = np.asarray(correct, np.float64)
  speed = coefficient * np.asarray(tpf, np.float64)
  if correct_only:
    speed = np.where(is_correct(correct), speed, 0.0)
  return acc, speed, _group_zscore(acc + speed, group)


def shape(group: np.ndarray, correct: np.ndarray, tpf: np.ndarray, cfg: ShapingConfig,
          graded: np.ndarray | None = None) -> Shaped:
  """The whole §7.3 pipeline: decoupled rewards r = a + s (or the joint ablation), group filters, advantages over
  kept responses. `graded` [n]: the responses scored by a pass rate (code; see `accuracy_reward`)."""
  if cfg.reward_norm == "joint":
    acc, speed, reward = joint_reward(group, correct, tpf, cfg.tpf_coefficient, cfg.speed_reward_correct_only)
  else:
    acc = accuracy_reward(group, correct, cfg.acc_norm, graded)
    speed = speed_reward(group, tpf, cfg.tpf_norm_mode, cfg.tpf_coefficient,
                         correct if cfg.speed_reward_correct_only else None)
    reward = acc + speed
  keep, counts = filter_groups(group, correct, tpf, cfg.filter_all_wrong, cfg.filter_tpf_threshold)
  return Shaped(acc, speed, reward, keep, advantages(group, reward, keep, cfg.adv_norm_mode), counts)


def metrics(shaped: Shaped, correct: np.ndarray, tpf: np.ndarray) -> dict:
  """Rollout metrics over all responses before filtering (population std); tpf_mean is the mean per-response TPF."""
  groups = max(shaped.counts["groups"], 1)
  return {
      "reward_mean": float(np.mean(shaped.reward)),
      "reward_std": float(np.std(shaped.reward)),
      "acc_reward_mean": float(np.mean(shaped.acc_reward)),
      "speed_reward_mean": float(np.mean(shaped.speed_reward)),
      "correct_ratio": float(np.mean(is_correct(correct))),
      "kept_group_frac": shaped.counts["kept"] / groups,
      "tpf_mean": float(np.mean(tpf)),
  }
