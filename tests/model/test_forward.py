"""KV-cache decode vs the full forward, chunked log-probs, remat, bf16 and logical axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.model import forward, init_cache, logits, param_axes, token_logprobs
from lrl_jax.model.attention import attend
from lrl_jax.model import masks


def _tokens(cfg, shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(4, cfg.vocab_size, shape))


def test_kv_cache_block_decode_equals_full_forward(tiny_model):
  """Prefill of the complete prompt blocks, then one block per call against the cache == one block-causal pass."""
  cfg, params, _ = tiny_model
  bs, n = cfg.block_size, 3 * cfg.block_size + 2
  tokens = _tokens(cfg, (2, n), seed=5)
  positions = jnp.broadcast_to(jnp.arange(n), (2, n))
  full, _ = forward(params, cfg, tokens, positions)
  cache = init_cache(cfg, 2, 4 * bs)
  got = []
  for start in range(0, n, bs):
    size = min(bs, n - start)
    h, cache = forward(params, cfg, tokens[:, start:start + size], positions[:, start:start + size], cache=cache)
    got.append(h)
  assert np.abs(np.concatenate(got, 1) - np.asarray(full)).max() <= 1e-5


def test_cache_rows_at_different_positions(tiny_model):
  """Each row writes at its own positions: a batch with rows at different blocks equals each row alone."""
  cfg, params, _ = tiny_model
  bs = cfg.block_size
  seqs = [_tokens(cfg, (1, 2 * bs), seed=6), _tokens(cfg, (1, 3 * bs), seed=7)]
  alone = []
  for s in seqs:
    h, _ = forward(params, cfg, s, jnp.arange(s.shape[1])[None])
    alone.append(np.asarray(h[:, -bs:]))
  cache = init_cache(cfg, 2, 4 * bs)
  prefix = jnp.concatenate([jnp.pad(seqs[0][:, :bs], ((0, 0), (0, bs))), seqs[1][:, :2 * bs]], 0)
  valid = jnp.asarray([[True] * bs + [False] * bs, [True] * 2 * bs])
  _, cache = forward(params, cfg, prefix, jnp.broadcast_to(jnp.arange(2 * bs), (2, 2 * bs)), valid=valid, cache=cache)
  last = jnp.concatenate([seqs[0][:, bs:], seqs[1][:, 2 * bs:]], 0)
  pos = jnp.stack([jnp.arange(bs, 2 * bs), jnp.arange(2 * bs, 3 * bs)])
  h, _ = forward(params, cfg, last, pos, cache=cache)
  assert np.abs(np.asarray(h[0:1]) - alone[0]).max() <= 1e-5
  assert np.abs(np.asarray(h[1:2]) - alone[1]).max() <= 1e-5


def test_read_only_cache_call_equals_write_then_attend(tiny_model):
  """A denoising call (cache_write=False) attends to its own keys plus the earlier cache slots: the same hidden
  states as writing first, and the cache comes back unchanged; rows at different blocks, one with a pad token."""
  cfg, params, _ = tiny_model
  bs = cfg.block_size
  tokens = _tokens(cfg, (2, 3 * bs), seed=8)
  cache = init_cache(cfg, 2, 4 * bs)
  valid = jnp.asarray([[True] * bs + [False] * 2 * bs, [True] * 2 * bs + [False] * bs])
  _, cache = forward(params, cfg, tokens, jnp.broadcast_to(jnp.arange(3 * bs), (2, 3 * bs)), valid=valid, cache=cache)
  blk = _tokens(cfg, (2, bs), seed=9)
  pos = jnp.stack([jnp.arange(bs, 2 * bs), jnp.arange(2 * bs, 3 * bs)])
  blk_valid = jnp.asarray([[True] * bs, [True] * (bs - 1) + [False]])
  written, _ = forward(params, cfg, blk, pos, valid=blk_valid, cache=jax.tree.map(jnp.copy, cache))
  read, same = forward(params, cfg, blk, pos, valid=blk_valid, cache=cache, cache_write=False)
  assert np.abs(np.asarray(read) - np.asarray(written)).max() <= 1e-5
  assert all(np.array_equal(same[n], cache[n]) for n in ("k", "v"))


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
  assert np.abs(np.asarray(l32) - np.asarray(l16)).max() < 0.1


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
