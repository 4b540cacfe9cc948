"""Paged-prefix decode calls vs the full forward, old checkpoints, chunked log-probs, remat, bf16, logical axes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.kernels import masks
from lrl_jax.kernels.dense_xla import attend
from lrl_jax.model import KV, PagedKV, forward, logits, param_axes, token_logprobs


def _tokens(cfg, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(4, cfg.vocab_size, shape))


def _pool(cfg, kv, rows_pages, page, num_pages, seed=0):
  """A page pool [layers, num_pages, page, kh, d] holding each row's keys/values [layers, b, t, ...] in its pages."""
  pool = {n: np.zeros((cfg.num_layers, num_pages, page, cfg.num_kv_heads, cfg.head_dim), np.float32) for n in "kv"}
  for n, arr in (("k", kv.k), ("v", kv.v)):
    arr = np.asarray(arr)
    for b, pages in enumerate(rows_pages):
      for i, pg in enumerate(pages):
        chunk = arr[:, b, i * page:(i + 1) * page]
        pool[n][:, pg, :chunk.shape[1]] = chunk
  return pool


def test_paged_prefix_block_decode_equals_full_forward(tiny_model):
  """Prefill of the complete prompt blocks (own keys returned), pages scattered in a pool, then one block per call
  reading the paged prefix == one block-causal pass over the whole sequence."""
  cfg, params, _ = tiny_model
  bs, n = cfg.block_size, 3 * cfg.block_size + 2
  tokens = _tokens(cfg, (2, n), seed=5)
  positions = jnp.broadcast_to(jnp.arange(n), (2, n))
  full, _ = forward(params, cfg, tokens, positions)
  table = np.asarray([[5, 2, 7, 0], [1, 6, 3, 4]], np.int32)  # pages out of order, rows interleaved
  got, seen = [], None
  for start in range(0, n, bs):
    size = min(bs, n - start)
    prefix = None
    if seen is not None:
      pool = _pool(cfg, seen, table[:, :start // bs], bs, 8)
      prefix = PagedKV(jnp.asarray(pool["k"]), jnp.asarray(pool["v"]), jnp.asarray(table),
                       jnp.full((2,), start, jnp.int32))
    h, kv = forward(params, cfg, tokens[:, start:start + size], positions[:, start:start + size], prefix=prefix,
                    return_kv=True)
    seen = kv if seen is None else KV(*(jnp.concatenate([a, b], 2) for a, b in zip(seen, kv)))
    got.append(h)
  assert np.abs(np.concatenate(got, 1) - np.asarray(full)).max() <= 1e-5


def test_paged_prefix_rows_at_different_positions(tiny_model):
  """Each row reads only its own cached length: rows at different blocks (one with a pad token in its block) equal
  each row alone; the returned keys/values are the call's own, [layers, b, t, kv_heads, head_dim]."""
  cfg, params, _ = tiny_model
  bs = cfg.block_size
  seqs = [_tokens(cfg, (1, 2 * bs), seed=6), _tokens(cfg, (1, 3 * bs), seed=7)]
  alone = []
  for s in seqs:
    h, _ = forward(params, cfg, s, jnp.arange(s.shape[1])[None])
    alone.append(np.asarray(h[:, -bs:]))
  prompt = jnp.concatenate([jnp.pad(seqs[0][:, :bs], ((0, 0), (0, bs))), seqs[1][:, :2 * bs]], 0)
  valid = jnp.asarray([[True] * bs + [False] * bs, [True] * 2 * bs])
  _, kv = forward(params, cfg, prompt, jnp.broadcast_to(jnp.arange(2 * bs), (2, 2 * bs)), valid=valid,
                  return_kv=True)
  assert kv.k.shape == (cfg.num_layers, 2, 2 * bs, cfg.num_kv_heads, cfg.head_dim)
  table = np.asarray([[3, 0], [1, 2]], np.int32)
  pool = _pool(cfg, kv, table, bs, 4)
  prefix = PagedKV(jnp.asarray(pool["k"]), jnp.asarray(pool["v"]), jnp.asarray(table), jnp.asarray([bs, 2 * bs]))
  last = jnp.concatenate([seqs[0][:, bs:], seqs[1][:, 2 * bs:]], 0)
  pos = jnp.stack([jnp.arange(bs, 2 * bs), jnp.arange(2 * bs, 3 * bs)])
  h, none = forward(params, cfg, last, pos, prefix=prefix)
  assert none is None
  assert np.abs(np.asarray(h[0:1]) - alone[0]).max() <= 1e-5
  assert np.abs(np.asarray(h[1:2]) - alone[1]).max() <= 1e-5
  blk_valid = jnp.asarray([[True] * bs, [True] * (bs - 1) + [False]])  # a pad key changes nothing before it
  h_pad, _ = forward(params, cfg, last, pos, valid=blk_valid, prefix=prefix)
  assert np.abs(np.asarray(h_pad[0]) - np.asarray(h[0])).max() <= 1e-6


def test_checkpoint_written_before_flax_loads_identically():
  """tests/fixtures/orbax_v0 was written by the pre-Flax model (commit f58c103) with its logits: the same tree loads
  and gives the same logits (fp32, 1e-5: the stored logits came from an older XLA, whose CPU matmuls round differently
  by ~1e-6 on logits of size ~2; a wrong or permuted weight moves them by >1e-2)."""
  from lrl_jax.weights import load_checkpoint
  root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
  cfg, params, _ = load_checkpoint(os.path.join(root, "orbax_v0"))
  tokens = jnp.asarray([[5, 9, 17, 3, 3, 40, 41, 3]])
  h, _ = forward(params, cfg, tokens, jnp.arange(8)[None], mode="block", block_size=4)
  want = np.load(os.path.join(root, "orbax_v0_logits.npy"))
  assert np.abs(np.asarray(logits(params, cfg, h)) - want).max() <= 1e-5


def test_token_logprobs_match_full_log_softmax(tiny_model):
  cfg, params, _ = tiny_model
  hidden, _ = forward(params, cfg, _tokens(cfg, (2, 10)), jnp.broadcast_to(jnp.arange(10), (2, 10)))
  targets = _tokens(cfg, (2, 10), seed=1)
  logp, ent = token_logprobs(params, cfg, hidden, targets, chunk=4)  # 10 is not a multiple of 4: padded chunk
  full = jax.nn.log_softmax(logits(params, cfg, hidden), -1)
  want = np.take_along_axis(np.asarray(full), np.asarray(targets)[..., None], -1)[..., 0]
  assert np.abs(np.asarray(logp) - want).max() <= 1e-5
  assert np.abs(np.asarray(ent) + (np.exp(full) * full).sum(-1)).max() <= 1e-5


def test_query_chunked_attention_and_remat_match(tiny_model):
  cfg, params, _ = tiny_model
  tokens = _tokens(cfg, (1, 16), seed=2)
  pos = jnp.arange(16)[None]
  base, _ = forward(params, cfg, tokens, pos)
  chunked, _ = forward(params, cfg, tokens, pos, q_chunk=4, remat="full")
  assert np.abs(np.asarray(base) - np.asarray(chunked)).max() <= 1e-5

  loss = lambda p, **kw: forward(p, cfg, tokens, pos, **kw)[0].sum()
  g0 = jax.grad(loss)(params)
  g1 = jax.grad(lambda p: loss(p, remat="dots", q_chunk=8))(params)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):  # relative to each gradient's scale
    assert float(jnp.abs(a - b).max()) <= 1e-5 * max(1.0, float(jnp.abs(a).max()))


def test_bfloat16_compute_close_to_float32(tiny_model):
  cfg, params, _ = tiny_model
  tokens = _tokens(cfg, (1, 12), seed=3)
  pos = jnp.arange(12)[None]
  h32, _ = forward(params, cfg, tokens, pos)
  h16, _ = forward(params, cfg, tokens, pos, dtype=jnp.bfloat16)
  assert h16.dtype == jnp.bfloat16
  l32, l16 = logits(params, cfg, h32), logits(params, cfg, h16)
  assert l16.dtype == jnp.float32
  # logits have std ~0.16 here; bf16 rounding (eps 2^-8) gives max |Δ| ~0.005, mean ~0.001 (measured over 5 seeds)
  diff = np.abs(np.asarray(l32) - np.asarray(l16))
  assert diff.max() <= 0.015 and diff.mean() <= 0.003


def test_param_axes_cover_every_param(tiny_model):
  cfg, params, _ = tiny_model
  axes = param_axes(cfg)
  for leaf, names in zip(jax.tree.leaves(params), jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
    assert len(names) == leaf.ndim
  assert jax.tree.structure(params) == jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, tuple))


def test_fully_masked_query_rows_stay_finite():
  q = jnp.ones((1, 2, 2, 4))
  tok = masks.make_tokens(jnp.arange(2)[None], valid=jnp.zeros((1, 2), bool))
  out = attend(q, q, q, tok, tok, "causal", None)
  assert np.isfinite(np.asarray(out)).all()


def test_compile_time_flat_in_depth(tiny_cfg):
  """Layers under scan: the traced program does not grow with the number of layers."""
  from lrl_jax.model import init_params
  sizes = []
  for layers in (2, 8):
    cfg = type(tiny_cfg)(**{**tiny_cfg.__dict__, "num_layers": layers})
    params = init_params(cfg, jax.random.key(0))
    text = jax.jit(lambda p, t: forward(p, cfg, t, jnp.arange(8)[None])[0]).lower(params, jnp.zeros((1, 8), int)).as_text()
    sizes.append(len(text))
  assert sizes[1] < sizes[0] * 1.05


@pytest.mark.parametrize("mode", ["bogus"])
def test_unknown_mask_mode(tiny_model, mode):
  cfg, params, _ = tiny_model
  with pytest.raises(ValueError, match="unknown mask mode"):
    forward(params, cfg, _tokens(cfg, (1, 4)), jnp.arange(4)[None], mode=mode)
