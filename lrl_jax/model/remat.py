"""Rematerialisation policies of the layer scan, by name (config `model.remat`).

Names the policies read (`jax.ad_checkpoint.checkpoint_name`): "attn_out" and "attn_lse", the attention output
[batch, len, heads, head_dim] and its float32 log-sum-exp [batch, kv_heads, group, len] (named in `flash.py` and
the kernels); "layer_input", each decoder layer's input [batch, len, embed] (named by the layer code).

| name | saved per layer for the backward | recomputed |
| --- | --- | --- |
| none | everything (no remat) | nothing |
| dots | every matmul output (projections, MLP) | elementwise ops |
| attn | attention output and log-sum-exp ("cheap to keep": 1 + 1/head_dim of the embed width, float32 lse) | the layer except attention |
| full | nothing but the scan carry | the whole layer |
| offload | like attn, plus the layer input, all moved to host memory | the layer except attention |
"""

from __future__ import annotations

import jax

SAVED_ATTENTION = ("attn_out", "attn_lse")
OFFLOADED = ("layer_input",) + SAVED_ATTENTION

POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "attn": jax.checkpoint_policies.save_only_these_names(*SAVED_ATTENTION),
    "offload": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=list(OFFLOADED), offload_src="device",
        offload_dst="pinned_host"),
}


def policy(name: str):
  """The jax.checkpoint policy of `name` (None for "none": no remat); a ValueError names the choices."""
  if name not in POLICIES:
    raise ValueError(f"remat={name!r} is not one of {tuple(POLICIES)}")
  return POLICIES[name]
