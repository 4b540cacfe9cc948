"""Prompt sampling for RL: sequential passes over a dataset, reshuffled each pass; the cursor is checkpointed."""

from __future__ import annotations

from typing import Any

import numpy as np


class PromptSampler:
  """Yields dataset indices in epoch-shuffled order; `state()`/`restore()` make resumption exact."""

  def __init__(self, size: int, seed: int = 0):
    if size <= 0:
      raise ValueError("the training dataset is empty")
    self.size, self.seed = size, seed
    self.epoch, self.position = 0, 0

  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.size)

  def next(self, n: int) -> list[int]:
    """The next n indices, continuing into a freshly shuffled pass when one ends."""
    out: list[int] = []
    while len(out) < n:
      order = self._order(self.epoch)
      take = min(n - len(out), self.size - self.position)
      out.extend(int(i) for i in order[self.position:self.position + take])
      self.position += take
      if self.position == self.size:
        self.epoch, self.position = self.epoch + 1, 0
    return out

  def state(self) -> dict[str, Any]:
    return {"epoch": self.epoch, "position": self.position, "size": self.size, "seed": self.seed}

  def restore(self, state: dict[str, Any]) -> None:
    if state["size"] != self.size or state["seed"] != self.seed:
      raise ValueError(f"checkpointed data cursor is for a dataset of {state['size']} records (seed {state['seed']}), "
                       f"not {self.size} (seed {self.seed})")
    self.epoch, self.position = int(state["epoch"]), int(state["position"])

