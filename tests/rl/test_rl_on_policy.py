"""`StepConfig.on_policy` (train.recompute_old_logp=False): the loss and gradient of the recomputed logp_old path."""

import jax
import numpy as np

from lrl_jax.decode import Record
from lrl_jax.model import init_params
from lrl_jax.rl import batch as batch_lib, losses, step as step_lib
from lrl_jax.weights import tiny


def _rows(cfg, n_seq=6, seed=0):
  rng = np.random.default_rng(seed)
  records = []
  for _ in range(n_seq):
    p, n = int(rng.integers(3, 9)), int(rng.integers(4, 12))
    records.append(Record(rng.integers(4, cfg.vocab_size, p).astype(np.int32),
                          rng.integers(4, cfg.vocab_size, n).astype(np.int32), rng.integers(0, 6, n).astype(np.int32),
                          length=n - 1, forwards_total=6, truncated=False, logprobs=np.zeros(n - 1, np.float32)))
  return batch_lib.training_rows(records, rng.normal(size=n_seq), rng.random(n_seq) < 0.5, mode="trajectory",
                                 block_size=4, shrink=1, pad_id=0, row_multiple=8)


def _grads(params, r, sc, loss_cfg, logp_old):
  grads = aux = None
  for mb in batch_lib.micro_batches(r, np.arange(r.batch.tokens.shape[0]), 8, loss_cfg, logp_old, logp_old):
    mb = step_lib.MicroBatch(**mb)
    if grads is None:
      grads, aux = step_lib.micro_grads(params, mb, sc=sc)
    else:
      grads, aux = step_lib.accumulate(params, grads, aux, mb, sc=sc)
  return grads, losses.finalize_metrics(jax.tree.map(np.asarray, aux))


def test_on_policy_gradient_equals_the_recomputed_logp_old_one():
  with jax.default_matmul_precision("highest"):
    cfg = tiny.tiny_config(num_heads=4, num_kv_heads=2, vocab_size=128)
    params = init_params(cfg, jax.random.key(0))
    loss_cfg = losses.LossConfig(kl_beta=0.0)
    sc = step_lib.StepConfig(cfg, loss_cfg, block_size=4)
    r = _rows(cfg)
    b = r.batch
    logp_old = np.asarray(step_lib.logprobs(params, b.tokens, b.noisy_masked, b.valid, sc=sc))
    want, want_aux = _grads(params, r, sc, loss_cfg, logp_old)
    # on_policy never reads logp_old: garbage there must not change anything
    got, got_aux = _grads(params, r, step_lib.StepConfig(cfg, loss_cfg, block_size=4, on_policy=True), loss_cfg,
                          np.full_like(logp_old, 7.0))
  norm = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(want))
  assert norm > 1e-3  # a real gradient, not a vanishing one
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6)
  assert got_aux["ratio_mean"] == 1.0 and got_aux["clip_frac"] == 0.0
  np.testing.assert_allclose(got_aux["loss"], want_aux["loss"], rtol=1e-5, atol=1e-7)
