"""LightningRL loss (SPEC §7.4): clipped surrogate + KL to the reference + NLL on correct responses.

Exact accounting: every reduction (token or sequence mean) is folded into per-token weights computed on the host
over the WHOLE accumulated batch before it is split (`loss_weights`). Each micro-batch's loss is then a plain
weighted sum, so summing micro-batch losses (and gradients) gives exactly the full-batch loss, however rows are split.
"""

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lrl_jax.checks import check_choice, check_float
from lrl_jax.rl.algorithms import settings

REDUCTIONS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLIP = 10.0


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss settings with the SPEC §7.4 defaults; each term has its own reduction (token | sequence)."""
  eps: float = 0.2
  eps_high: float = 0.2
  nll_loss_weight: float = 0.1
  kl_beta: float = 0.01
  kl_estimator: str = "k3"
  policy_reduction: str = "sequence"
  kl_reduction: str = "token"
  nll_reduction: str = "token"
  router_aux_loss_coef: float = 0.0  # MoE models: weight of the load-balancing loss (off by default)

  def __post_init__(self):
    self.validate()

  def validate(self) -> "LossConfig":
    """Raise FieldError (a ValueError) naming the first setting out of range; return self."""
    for name in ("eps", "eps_high", "nll_loss_weight", "kl_beta", "router_aux_loss_coef"):
      check_float(name, getattr(self, name), 0.0)
    check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
    for name in ("policy_reduction", "kl_reduction", "nll_reduction"):
      check_choice(name, getattr(self, name), REDUCTIONS)
    return self


def for_algorithm(name: str) -> LossConfig:
  """Loss settings of the SPEC §7.5 algorithm `name` (rl/algorithms.py); a ValueError names an unknown one."""
  return LossConfig(**settings(name).loss)


class LossWeights(NamedTuple):
  """Per-token reduction weights [rows, seq] float32 of each term; each sums to 1 over the accumulated batch."""
  policy: np.ndarray
  kl: np.ndarray
  nll: np.ndarray


def reduction_weights(token_mask: np.ndarray, row_to_seq: np.ndarray, mode: str,
                      num_sequences: int | None = None, num_tokens: int | None = None) -> np.ndarray:
  """Per-token weights [rows, seq] float32 turning a weighted sum into the batch mean of `mode`.

  token: 1 / (num_tokens, default the scored tokens in the batch). sequence: 1 / (num_sequences * scored tokens of
  the token's sequence over all its rows); num_sequences defaults to the number of sequences with a scored token.
  (Give both when the batch is split over processes: its totals.) Pad rows (row_to_seq < 0) must have no scored
  token. An empty mask gives zeros.
  """
  mask = np.asarray(token_mask, bool)
  row_to_seq = np.asarray(row_to_seq)
  if mask[row_to_seq < 0].any():
    raise ValueError("pad rows (row_to_seq < 0) must not have scored tokens")
  if mode == "token":
    per_row_count = np.full(mask.shape[0], max(mask.sum() if num_tokens is None else num_tokens, 1), np.float64)
  elif mode == "sequence":
    seq = np.maximum(row_to_seq, 0)
    seq_tokens = np.bincount(seq, mask.sum(axis=1).astype(np.float64), minlength=seq.max(initial=0) + 1)
    if num_sequences is None:
      num_sequences = int((seq_tokens > 0).sum())
    per_row_count = np.maximum(num_sequences * seq_tokens[seq], 1)
  else:
    raise ValueError(f"reduction {mode!r} is not one of {REDUCTIONS}")
  return (mask / per_row_count[:, None]).astype(np.float32)


def loss_weights(token_mask: np.ndarray, row_to_seq: np.ndarray, correct: np.ndarray, cfg: LossConfig,
                 num_sequences: int | None = None, totals: tuple[int, int, int, int] | None = None) -> LossWeights:
  """All three terms' weights over the whole accumulated batch; NLL only over rows whose `correct` [rows] is 1.

  `totals` = (scored tokens, sequences, NLL tokens, NLL sequences) of the whole accumulated batch when these rows
  are only part of it (a multi-process run: rl/batch.totals summed over processes).
  """
  mask = np.asarray(token_mask, bool)
  nll_mask = mask & (np.asarray(correct) > 0.5)[:, None]
  tokens, sequences, nll_tokens, nll_sequences = totals if totals is not None else (None, num_sequences, None, None)
  return LossWeights(reduction_weights(mask, row_to_seq, cfg.policy_reduction, sequences, tokens),
                     reduction_weights(mask, row_to_seq, cfg.kl_reduction, sequences, tokens),
                     reduction_weights(nll_mask, row_to_seq, cfg.nll_reduction, nll_sequences, nll_tokens))


def kl_penalty(logp: jnp.ndarray, logp_ref: jnp.ndarray, estimator: str) -> jnp.ndarray:
  """Per-token KL estimate [rows, seq] with d = logp - logp_ref: k1 = d, k2 = d^2 / 2, k3 = exp(-d) - 1 + d."""
  d = logp - logp_ref
  if estimator == "k1":
    return d
  if estimator == "k2":
    return 0.5 * d * d
  if estimator == "k3":
    neg_d = jnp.clip(-d, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    return jnp.exp(neg_d) - 1.0 + d
  raise ValueError(f"kl_estimator {estimator!r} is not one of {KL_ESTIMATORS}")


def rl_loss(logp: jnp.ndarray, logp_old: jnp.ndarray, logp_ref: jnp.ndarray, advantages: jnp.ndarray,
            token_mask: jnp.ndarray, weights: LossWeights, cfg: LossConfig,
            entropy: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict]:
  """Micro-batch loss = policy + kl_beta * KL + nll_loss_weight * NLL, each a weighted token sum -> (total, aux).

  logp/logp_old/logp_ref/token_mask/entropy: [rows, seq]; advantages: [rows]. aux holds this micro-batch's
  additive contributions (combine with `combine_aux`, convert with `finalize_metrics`).
  """
  mask = token_mask.astype(bool)
  adv = advantages.astype(jnp.float32)[:, None]  # [rows, 1]
  ratio = jnp.exp(jnp.clip(logp - logp_old, -LOG_RATIO_CLIP, LOG_RATIO_CLIP))
  high = jnp.where(adv >= 0, 1.0 + cfg.eps_high, 1.0 + cfg.eps)
  clipped = jnp.clip(ratio, 1.0 - cfg.eps, high)
  surrogate = jnp.minimum(ratio * adv, clipped * adv)
  policy = -jnp.sum(weights.policy * surrogate)
  kl = jnp.sum(weights.kl * kl_penalty(logp, logp_ref, cfg.kl_estimator))
  nll = -jnp.sum(weights.nll * logp)
  total = policy + cfg.kl_beta * kl + cfg.nll_loss_weight * nll
  aux = {
      "loss": total,
      "policy_loss": policy,
      "kl": kl,
      "nll": nll,
      "ratio_sum": jnp.sum(jnp.where(mask, ratio, 0.0)),
      "ratio_min": jnp.min(jnp.where(mask, ratio, jnp.inf)),
      "ratio_max": jnp.max(jnp.where(mask, ratio, -jnp.inf)),
      "clipped_tokens": jnp.sum(mask & (clipped * adv < ratio * adv)).astype(jnp.float32),
      "tokens": jnp.sum(mask).astype(jnp.float32),
  }
  if entropy is not None:
    aux["entropy_sum"] = jnp.sum(jnp.where(mask, entropy, 0.0))
  return total, aux


def combine_aux(a: dict, b: dict) -> dict:
  """Accumulate two micro-batches' aux: min for ratio_min, max for ratio_max, sum for everything else."""
  combine = {"ratio_min": jnp.minimum, "ratio_max": jnp.maximum}
  return {k: combine.get(k, jnp.add)(a[k], b[k]) for k in a}


def router_coefficients(load: np.ndarray, tokens: float) -> np.ndarray:
  """[experts] float32: c_e = experts · L_e / T², from an update's router load L [layers, experts] and token count T
  summed over its layers (host arrays). The update's load-balancing loss is then exactly Σ_micro-batches Σ_e c_e P_e
  with P_e a micro-batch's router-probability sum: L has no gradient (top-k), so f_e = L_e / T is a constant."""
  load = np.asarray(load, np.float64).reshape(-1, np.shape(load)[-1]).sum(0)
  return (load.size * load / max(float(tokens), 1.0) ** 2).astype(np.float32)


def with_router(total: jnp.ndarray, aux: dict, stats, coefficients: jnp.ndarray | None,
                cfg: LossConfig) -> tuple[jnp.ndarray, dict]:
  """An MoE micro-batch: adds `router_aux_loss_coef` × Σ_e c_e P_e (its part of the update's load-balancing loss,
  `router_coefficients`; not read when the loss is off) to the loss, and its router sums (per layer and expert, over
  the rows' valid tokens) to aux."""
  if cfg.router_aux_loss_coef:
    if coefficients is None:
      raise ValueError("router_aux_loss_coef > 0 needs the update's coefficients (losses.router_coefficients)")
    total = total + cfg.router_aux_loss_coef * jnp.sum(coefficients * jnp.sum(stats.prob, axis=0))
  aux = dict(aux, loss=total, moe_load=stats.load, moe_prob=stats.prob, moe_tokens=stats.tokens)
  return total, aux


def finalize_metrics(aux: dict) -> dict:
  """Accumulated aux -> metrics: the losses as they are (already batch means), token means of ratio/clip/entropy."""
  tokens = aux["tokens"]
  denom = jnp.maximum(tokens, 1.0)
  out = {k: aux[k] for k in ("loss", "policy_loss", "kl", "nll", "tokens")}
  out["ratio_mean"] = aux["ratio_sum"] / denom
  out["ratio_min"] = jnp.where(tokens > 0, aux["ratio_min"], 0.0)
  out["ratio_max"] = jnp.where(tokens > 0, aux["ratio_max"], 0.0)
  out["clip_frac"] = aux["clipped_tokens"] / denom
  if "entropy_sum" in aux:
    out["entropy"] = aux["entropy_sum"] / denom
  if "moe_load" in aux:  # per-expert load over every token of the update, all layers
    from lrl_jax.model import moe
    stats = moe.RouterStats(aux["moe_load"], aux["moe_prob"], aux["moe_tokens"])
    out.update(moe.load_summary(stats), router_aux_loss=moe.load_balancing_loss(stats))  # the update's, whole
  return out
