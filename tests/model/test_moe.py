"""The MoE block against independent references: a per-token numpy loop over its k experts, the all-experts dense
form (outputs and gradients), transformers' load-balancing loss; router statistics; config reading."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

from lrl_jax.model import ConfigError, config_from_dict, forward, init_params, moe
from lrl_jax.weights import tiny_moe

N, E, M, X = 37, 16, 24, 8  # tokens, hidden, expert width, experts


def _weights(seed=0):
  r = np.random.default_rng(seed)
  return [jnp.asarray(r.normal(0, s, shape), jnp.float32) for s, shape in
          ((1.0, (N, E)), (1.0, (E, X)), (0.3, (X, E, M)), (0.3, (X, E, M)), (0.3, (X, M, E)))]


def _numpy_loop(x, router, gate, up, down, k, norm):
  """Per token: float64 softmax, its k best experts, each expert's SwiGLU, weighted sum (SPEC §2 as written)."""
  x, router, gate, up, down = (np.asarray(a, np.float64) for a in (x, router, gate, up, down))
  out = np.zeros_like(x)
  for i in range(x.shape[0]):
    logits = x[i] @ router
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p, kind="stable")[:k]
    w = p[top] / (p[top].sum() if norm else 1.0)
    for e, we in zip(top, w):
      g, u = x[i] @ gate[e], x[i] @ up[e]
      out[i] += we * ((g / (1 + np.exp(-g)) * u) @ down[e])
  return out


@pytest.mark.parametrize("k,norm", [(1, False), (2, True), (3, False), (8, True)])
def test_grouped_matches_loop_and_dense(k, norm):
  x, router, gate, up, down = _weights()
  routing = moe.route(x, router, k, norm)
  got = moe.experts_grouped(x, routing, gate, up, down)
  want = _numpy_loop(x, router, gate, up, down, k, norm)
  assert np.abs(np.asarray(got) - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
  assert np.abs(got - moe.dense_reference(x, routing, gate, up, down)).max() <= 1e-5
  if k < X:  # uneven loads, some expert idle or heavy: the case a capacity-limited router would drop tokens in
    loads = np.bincount(np.asarray(routing.experts).ravel(), minlength=X)
    assert loads.max() > loads.min()


def test_gradients_match_dense_reference():
  x, router, gate, up, down = _weights(1)

  def loss(fn, x, router, gate, up, down):
    routing = moe.route(x, router, 2, True)
    return jnp.sum(jnp.sin(fn(x, routing, gate, up, down)))

  got = jax.grad(lambda *a: loss(moe.experts_grouped, *a), argnums=range(5))(x, router, gate, up, down)
  want = jax.grad(lambda *a: loss(moe.dense_reference, *a), argnums=range(5))(x, router, gate, up, down)
  for g, w in zip(got, want):
    assert np.abs(g - w).max() <= 1e-5 * max(1.0, float(np.abs(w).max()))
  assert float(np.abs(got[1]).max()) > 0  # the router learns through the weights of its choices


def test_router_in_float32_from_bfloat16():
  x, router, *_ = _weights(2)
  routing = moe.route(x.astype(jnp.bfloat16), router.astype(jnp.bfloat16), 2, True)
  assert routing.probs.dtype == jnp.float32 and routing.weights.dtype == jnp.bfloat16


def test_stats_and_aux_loss_match_transformers():
  """Load counts skip padding; the aux loss equals `load_balancing_loss_func` over layers with a mask."""
  x, router, *_ = _weights(3)
  valid = np.arange(N) % 5 != 0
  layers = [moe.router_stats(moe.route(x * s, router, 3, False), jnp.asarray(valid)) for s in (1.0, 0.5)]
  stats = jax.tree.map(lambda *a: jnp.stack(a), *layers)
  assert np.allclose(stats.load.sum(-1), 3 * valid.sum()) and np.allclose(stats.tokens, valid.sum())
  gate_logits = tuple(torch.tensor(np.asarray(x * s @ router)) for s in (1.0, 0.5))
  want = load_balancing_loss_func(gate_logits, X, 3, torch.tensor(valid[None].astype(np.float32)))
  assert abs(float(moe.load_balancing_loss(stats)) - float(want)) <= 1e-5
  summary = moe.load_summary(stats)
  assert float(summary["moe/load_max_over_mean"]) >= 1.0 >= float(summary["moe/load_min_over_mean"])


def test_forward_router_stats_count_valid_tokens_per_layer():
  cfg = tiny_moe.tiny_moe_config(top_k=3)
  params = init_params(cfg, jax.random.key(0))
  tokens = jnp.arange(20).reshape(2, 10) + 4
  valid = jnp.arange(10)[None] < jnp.array([[10], [6]])
  positions = jnp.broadcast_to(jnp.arange(10), (2, 10))
  routed = forward(params, cfg, tokens, positions, valid=valid, router_stats=True)
  plain = forward(params, cfg, tokens, positions, valid=valid)
  assert routed.router.load.shape == (cfg.num_layers, cfg.num_experts)
  assert np.allclose(routed.router.load.sum(-1), 3 * 16) and np.array_equal(routed.out.hidden, plain.hidden)
  remat = forward(params, cfg, tokens, positions, valid=valid, router_stats=True, remat="full")
  assert np.array_equal(remat.router.load, routed.router.load)


def test_param_axes_name_the_expert_axis():
  from lrl_jax.model import param_axes, param_shapes
  cfg = tiny_moe.tiny_moe_config()
  axes, shapes = param_axes(cfg)["layers"], param_shapes(cfg)["layers"]
  assert axes["expert_gate"] == ("layers", "expert", "embed", "mlp") and shapes["expert_gate"] == (2, 8, 64, 32)
  assert axes["expert_down"] == ("layers", "expert", "mlp", "embed") and "gate_proj" not in axes


def _hub(**changes):
  raw = tiny_moe.hub_moe_config_json(tiny_moe.tiny_moe_config())
  raw.update(changes)
  return raw


def test_config_keys():
  cfg = config_from_dict(_hub())
  assert cfg == dataclasses.replace(tiny_moe.tiny_moe_config(), max_position_embeddings=cfg.max_position_embeddings)
  raw = _hub(model_type="qwen3_moe", num_local_experts=8)  # transformers 5's name
  del raw["num_experts"]
  assert config_from_dict(raw).num_experts == 8
  again = config_from_dict(json.loads(json.dumps(cfg.to_hf_dict() | {"mask_token_id": 3, "block_size": 4})))
  assert again.num_experts == 8 and again.norm_topk_prob and again.model_type == "qwen3_moe"
  every_dense = config_from_dict(_hub(mlp_only_layers=[0, 1]))
  assert not every_dense.is_moe


@pytest.mark.parametrize("changes,match", [
    (dict(mlp_only_layers=[1]), "mix dense and sparse"), (dict(decoder_sparse_step=2), "mix dense and sparse"),
    (dict(num_experts_per_tok=9), "exceeds"), (dict(moe_intermediate_size=0), "must be positive"),
    (dict(mask_token_id=None), "mask_token_id")])
def test_config_errors(changes, match):
  with pytest.raises(ConfigError, match=match):
    config_from_dict(_hub(**changes))
