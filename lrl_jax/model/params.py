"""The params pytree of the model: shapes, logical axis names and random initialisation.

Layer weights are stacked on a leading `layers` axis so the forward can `lax.scan` over them.
Projections keep heads as their own axis (`[embed, heads, head_dim]`) so a mesh can shard them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrl_jax.model.config import ModelConfig


def param_shapes(cfg: ModelConfig) -> dict:
  """Shape of every parameter, as the same nested dict the params use."""
  e, l, h, kh, d, m, v = (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                          cfg.intermediate_size, cfg.vocab_size)
  layers = {
      "input_norm": (l, e),
      "post_attn_norm": (l, e),
      "q_proj": (l, e, h, d),
      "k_proj": (l, e, kh, d),
      "v_proj": (l, e, kh, d),
      "o_proj": (l, h, d, e),
      "q_norm": (l, d),
      "k_norm": (l, d),
      "gate_proj": (l, e, m),
      "up_proj": (l, e, m),
      "down_proj": (l, m, e),
  }
  if cfg.attention_bias:
    layers.update(q_bias=(l, h, d), k_bias=(l, kh, d), v_bias=(l, kh, d), o_bias=(l, e))
  shapes = {"embed": (v, e), "final_norm": (e,), "layers": layers}
  if not cfg.tie_word_embeddings:
    shapes["lm_head"] = (e, v)
  return shapes


_LAYER_AXES = {
    "input_norm": ("layers", "embed"),
    "post_attn_norm": ("layers", "embed"),
    "q_proj": ("layers", "embed", "heads", "head_dim"),
    "k_proj": ("layers", "embed", "kv_heads", "head_dim"),
    "v_proj": ("layers", "embed", "kv_heads", "head_dim"),
    "o_proj": ("layers", "heads", "head_dim", "embed"),
    "q_norm": ("layers", "head_dim"),
    "k_norm": ("layers", "head_dim"),
    "gate_proj": ("layers", "embed", "mlp"),
    "up_proj": ("layers", "embed", "mlp"),
    "down_proj": ("layers", "mlp", "embed"),
    "q_bias": ("layers", "heads", "head_dim"),
    "k_bias": ("layers", "kv_heads", "head_dim"),
    "v_bias": ("layers", "kv_heads", "head_dim"),
    "o_bias": ("layers", "embed"),
}


def param_axes(cfg: ModelConfig) -> dict:
  """Logical axis names of every parameter (tuples), a pytree shaped like the params."""
  shapes = param_shapes(cfg)
  axes = {"embed": ("vocab", "embed"), "final_norm": ("embed",),
          "layers": {k: _LAYER_AXES[k] for k in shapes["layers"]}}
  if "lm_head" in shapes:
    axes["lm_head"] = ("embed", "vocab")
  return axes


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> dict:
  """Random params (normal(0, std) weights, unit norms), for tests and training from scratch."""
  shapes = param_shapes(cfg)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]]
  keys = jax.random.split(key, len(leaves))
  out = []
  for path, shape, k in zip(paths, leaves, keys):
    if "norm" in path:
      out.append(jnp.ones(shape, dtype))
    elif "bias" in path:
      out.append(jnp.zeros(shape, dtype))
    else:
      out.append((std * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, out)


def num_params(params: dict) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
