"""RL loss against direct numpy formulas and micro-batch invariance; fp32 tolerance 1e-6."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrl_jax.rl import losses

TOL = 1e-6
LOSS = jax.jit(losses.rl_loss, static_argnames="cfg")

# 3 sequences over 7 rows (trajectory-style: seq 0 -> rows 0, 1; seq 1 -> row 2; seq 2 -> rows 3..5; row 6 pad).
ROW_TO_SEQ = np.array([0, 0, 1, 2, 2, 2, -1])
SEQ_ADV = np.array([1.5, -0.7, 0.0])  # seq 2 has zero advantage
SEQ_CORRECT = np.array([1.0, 0.0, 1.0])
SEQ_LEN = 8


def _batch(seed=0):
  """Hand-made batch whose log ratios hit both clips, both ratio bounds and the interior."""
  rng = np.random.default_rng(seed)
  rows = len(ROW_TO_SEQ)
  mask = rng.random((rows, SEQ_LEN)) < 0.6
  mask[:, :3] = True
  mask[-1] = False
  logp = -rng.uniform(0.1, 3.0, (rows, SEQ_LEN)).astype(np.float32)
  log_ratio = rng.choice([-0.5, -0.15, 0.0, 0.05, 0.15, 0.22, 0.5], (rows, SEQ_LEN))
  log_ratio[0, :3] = [12.0, 0.5, 0.22]  # A > 0: above the e^10 cap, above 1 + eps_high, between the two eps
  log_ratio[2, :2] = [-12.0, -0.5]  # A < 0: below the e^-10 cap and below 1 - eps
  logp_old = (logp - log_ratio).astype(np.float32)
  logp_ref = (logp + rng.normal(0.0, 0.3, (rows, SEQ_LEN))).astype(np.float32)
  logp_ref[1, 0] = logp[1, 0] + 11.0  # -d above the k3 clip
  adv = np.where(ROW_TO_SEQ >= 0, SEQ_ADV[ROW_TO_SEQ], 0.0).astype(np.float32)
  correct = np.where(ROW_TO_SEQ >= 0, SEQ_CORRECT[ROW_TO_SEQ], 0.0).astype(np.float32)
  entropy = rng.uniform(0.0, 2.0, (rows, SEQ_LEN)).astype(np.float32)
  return logp, logp_old, logp_ref, adv, correct, mask, entropy


def _numpy_reference(logp, logp_old, logp_ref, adv, correct, mask, cfg):
  """Direct per-term means (no weights): policy over sequences of per-sequence means, KL/NLL over tokens."""
  lp, lo, lr = (x.astype(np.float64) for x in (logp, logp_old, logp_ref))
  a = adv.astype(np.float64)[:, None]
  ratio = np.exp(np.clip(lp - lo, -10, 10))
  clipped = np.clip(ratio, 1 - cfg.eps, np.where(a >= 0, 1 + cfg.eps_high, 1 + cfg.eps))
  surr = np.minimum(ratio * a, clipped * a)
  seq_means = [surr[(ROW_TO_SEQ == s)[:, None] & mask].mean() for s in range(3)]
  d = lp - lr
  k3 = np.exp(np.clip(-d, -10, 10)) - 1 + d
  kl = k3[mask].mean()
  nll = -lp[mask & (correct[:, None] > 0.5)].mean()
  policy = -np.mean(seq_means)
  grad = (-a * ratio * ((ratio * a <= clipped * a) & (np.abs(lp - lo) < 10)) * _w(mask, "sequence")
          + cfg.kl_beta * (1 - np.exp(-d) * (np.abs(d) < 10)) * _w(mask, "token")
          - cfg.nll_loss_weight * _w(mask & (correct[:, None] > 0.5), "token"))
  return policy + cfg.kl_beta * kl + cfg.nll_loss_weight * nll, policy, kl, nll, ratio, clipped, grad


def _w(mask, mode):
  """Reference reduction weights written out directly."""
  if mode == "token":
    return mask / mask.sum()
  counts = {s: mask[ROW_TO_SEQ == s].sum() for s in set(ROW_TO_SEQ[mask.any(1)])}
  per_row = np.array([counts.get(s, 1) * len(counts) for s in ROW_TO_SEQ])
  return mask / per_row[:, None]


def _run(cfg, batch, rows=slice(None)):
  """Loss, aux and d loss / d logp [rows, seq] of the selected rows, weights taken over the whole batch."""
  logp, logp_old, logp_ref, adv, correct, mask, entropy = batch
  weights = losses.loss_weights(mask, ROW_TO_SEQ, correct, cfg)
  pick = lambda x: jnp.asarray(x[rows])
  w = losses.LossWeights(*(pick(x) for x in weights))
  fn = lambda lp: LOSS(lp, pick(logp_old), pick(logp_ref), pick(adv), pick(mask), w, cfg=cfg, entropy=pick(entropy))
  (total, aux), grad = jax.value_and_grad(fn, has_aux=True)(pick(logp))
  return total, aux, np.asarray(grad)


@pytest.mark.parametrize("cfg", [losses.LossConfig(), losses.LossConfig(eps=0.1, eps_high=0.28, kl_beta=0.5)])
def test_matches_numpy_formulas(cfg):
  batch = _batch()
  logp, logp_old, logp_ref, adv, correct, mask, entropy = batch
  total, policy, kl, nll, ratio, clipped, grad = _numpy_reference(logp, logp_old, logp_ref, adv, correct, mask, cfg)
  got_total, aux, got_grad = _run(cfg, batch)
  metrics = losses.finalize_metrics(aux)
  np.testing.assert_allclose(float(got_total), total, rtol=TOL, atol=TOL)
  for key, want in (("policy_loss", policy), ("kl", kl), ("nll", nll), ("ratio_mean", ratio[mask].mean()),
                    ("ratio_min", ratio[mask].min()), ("ratio_max", ratio[mask].max()),
                    ("entropy", entropy[mask].mean()), ("tokens", mask.sum())):
    np.testing.assert_allclose(float(metrics[key]), want, rtol=TOL, atol=TOL, err_msg=key)
  a = adv[:, None]
  np.testing.assert_allclose(float(metrics["clip_frac"]), (clipped * a < ratio * a)[mask].mean(), atol=TOL)
  assert 0 < float(metrics["clip_frac"]) < 1 and float(metrics["ratio_max"]) == pytest.approx(np.exp(10), rel=TOL)
  np.testing.assert_allclose(got_grad, grad, rtol=TOL, atol=TOL)
  assert np.all(got_grad[~mask] == 0)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators(estimator):
  d = np.array([[-12.0, -1.0, 0.0, 0.3, 11.0]], np.float32)
  got = np.asarray(losses.kl_penalty(jnp.asarray(d), jnp.zeros_like(d), estimator))
  want = {"k1": d, "k2": d * d / 2, "k3": np.exp(np.clip(-d, -10, 10)) - 1 + d}[estimator]
  np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def _splits():
  perm = np.array([5, 0, 3, 1, 6, 2, 4])
  return [[np.arange(7)], [np.arange(3), np.arange(3, 7)], [np.array([0]), np.arange(1, 5), np.arange(5, 7)],
          [perm[:3], perm[3:5], perm[5:]]]


@pytest.mark.parametrize("policy_reduction", ["sequence", "token"])
def test_micro_batch_invariance(policy_reduction):
  cfg = losses.LossConfig(policy_reduction=policy_reduction, nll_reduction=policy_reduction)
  batch = _batch(seed=1)
  full_total, full_aux, full_grad = _run(cfg, batch)
  full_metrics = losses.finalize_metrics(full_aux)
  for split in _splits()[1:]:  # rows of seqs 0 and 2 land in different micro-batches
    total, aux, grad = 0.0, None, np.zeros_like(full_grad)
    for rows in split:
      t, a, g = _run(cfg, batch, rows)
      total, aux = total + t, a if aux is None else losses.combine_aux(aux, a)
      grad[rows] += g
    np.testing.assert_allclose(float(total), float(full_total), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(grad, full_grad, rtol=TOL, atol=TOL)
    metrics = losses.finalize_metrics(aux)
    for key, value in full_metrics.items():
      np.testing.assert_allclose(float(metrics[key]), float(value), rtol=TOL, atol=TOL, err_msg=key)
  # The same split with weights normalised per micro-batch (the naive scheme) changes the loss: the test can fail.
  logp, logp_old, logp_ref, adv, correct, mask, entropy = batch
  naive = 0.0
  for rows in _splits()[2]:
    w = losses.loss_weights(mask[rows], ROW_TO_SEQ[rows], correct[rows], cfg)
    naive += float(LOSS(*(jnp.asarray(x[rows]) for x in (logp, logp_old, logp_ref, adv, mask)),
                        losses.LossWeights(*map(jnp.asarray, w)), cfg=cfg)[0]) / 3
  assert abs(naive - float(full_total)) > 1e-3


def test_sequence_and_token_reductions():
  # seq 0: 1 token with A = +1; seq 1: 3 tokens with A = -1; ratio 1 everywhere, no KL, no NLL.
  mask = np.array([[1, 0, 0], [1, 1, 1]], bool)
  row_to_seq = np.array([0, 1])
  adv = jnp.array([1.0, -1.0])
  zeros = jnp.zeros((2, 3))
  for mode, want in (("token", 0.5), ("sequence", 0.0)):
    cfg = losses.LossConfig(policy_reduction=mode, kl_beta=0.0, nll_loss_weight=0.0)
    w = losses.loss_weights(mask, row_to_seq, np.zeros(2), cfg)
    total, _ = losses.rl_loss(zeros, zeros, zeros, adv, jnp.asarray(mask), losses.LossWeights(*w), cfg)
    assert float(total) == pytest.approx(want, abs=TOL), mode


def test_reduction_weights():
  mask = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
  row_to_seq = np.array([0, 1, 0, -1])
  np.testing.assert_allclose(losses.reduction_weights(mask, row_to_seq, "token"), mask / 5, atol=TOL)
  want = mask / np.array([[8.0], [2.0], [8.0], [1.0]])  # seq 0 has 4 tokens over two rows, seq 1 has 1
  np.testing.assert_allclose(losses.reduction_weights(mask, row_to_seq, "sequence"), want, atol=TOL)
  np.testing.assert_allclose(losses.reduction_weights(mask, row_to_seq, "sequence", 4), want / 2, atol=TOL)
  np.testing.assert_array_equal(losses.reduction_weights(np.zeros((2, 3), bool), np.array([0, 1]), "token"), 0.0)
  with pytest.raises(ValueError):
    losses.reduction_weights(mask, np.array([0, 1, 0, -1])[::-1], "token")


def test_configs():
  assert losses.for_algorithm("lightningrl") == losses.LossConfig()
  assert losses.LossConfig().policy_reduction == "sequence" and losses.LossConfig().kl_estimator == "k3"
  for name in ("grpo", "grpo_traj"):
    assert losses.for_algorithm(name).nll_loss_weight == 0.0
  with pytest.raises(ValueError):
    losses.LossConfig(kl_estimator="k4")
  with pytest.raises(ValueError):
    losses.for_algorithm("dpo")
