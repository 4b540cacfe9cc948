"""Random fp32 SDAR-format HF checkpoints of any size, written with numpy + safetensors (no torch), for memory tests."""

import json
import os

import numpy as np
from safetensors.numpy import save_file

from lrl_jax.weights import tiny


def make(out: str, layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int,
         vocab: int, shards: int, seed: int = 0) -> dict:
  """Write the checkpoint; returns {"bytes": total, "largest": bytes of the largest tensor}."""
  cfg = tiny.tiny_config(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                         num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=intermediate)
  e, h, kh, d, m, v = hidden, heads, kv_heads, head_dim, intermediate, vocab
  shapes = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,), "lm_head.weight": (v, e)}
  for i in range(layers):
    p = f"model.layers.{i}."
    shapes.update({p + "input_layernorm.weight": (e,), p + "post_attention_layernorm.weight": (e,),
                   p + "self_attn.q_proj.weight": (h * d, e), p + "self_attn.k_proj.weight": (kh * d, e),
                   p + "self_attn.v_proj.weight": (kh * d, e), p + "self_attn.o_proj.weight": (e, h * d),
                   p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,),
                   p + "mlp.gate_proj.weight": (m, e), p + "mlp.up_proj.weight": (m, e),
                   p + "mlp.down_proj.weight": (e, m)})
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(seed)
  names, weight_map = list(shapes), {}
  for j in range(shards):
    fname = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
    part = names[j::shards]
    save_file({n: rng.standard_normal(shapes[n], dtype=np.float32) for n in part}, os.path.join(out, fname))
    weight_map.update(dict.fromkeys(part, fname))
  with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(tiny.sdar_config_json(cfg), f)
  sizes = [4 * int(np.prod(s)) for s in shapes.values()]
  return {"bytes": sum(sizes), "largest": max(sizes)}
