"""HF tensor names of a Qwen3-MoE / SDAR-MoE layer's MLP and their place in our stacked params.

The hub stores each expert's projections as its own tensors (`mlp.experts.{e}.{gate,up,down}_proj.weight`, torch
Linear [out, in]) and the router as `mlp.gate.weight` [experts, hidden]; ours are one array per projection stacked
[layers, experts, in, out] and the router [layers, hidden, experts]. Each expert tensor is one piece of the stacked
leaf (index (layer, expert)), so conversion streams one expert matrix at a time.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lrl_jax.model.config import ModelConfig

DENSE_MLP = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
ROUTER = "mlp.gate.weight"
_PROJECTIONS = (("gate_proj", "expert_gate"), ("up_proj", "expert_up"), ("down_proj", "expert_down"))


class Entry(NamedTuple):
  """One HF tensor of a layer: our leaf, the layout maps both ways, and its expert (-1: not an expert tensor)."""
  ours: str
  to_ours: Callable
  to_hf: Callable
  expert: int = -1


def transpose(w):
  return w.T


def moe_entries(cfg: ModelConfig) -> dict[str, Entry]:
  """HF suffix (after `model.layers.{i}.`) → Entry, for the router and every expert's projections, in HF order."""
  out = {ROUTER: Entry("router", transpose, transpose)}
  for expert in range(cfg.num_experts):
    for hf_name, ours in _PROJECTIONS:
      out[f"mlp.experts.{expert}.{hf_name}.weight"] = Entry(ours, transpose, transpose, expert)
  return out
