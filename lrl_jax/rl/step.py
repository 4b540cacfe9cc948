"""Compiled pieces of the RL update: row log-probs, micro-batch gradients accumulated exactly, the optimizer update.

Loss weights are computed on the host over the whole accumulated batch, so the sum of micro-batch gradients is
the gradient of the accumulated batch's loss whatever the split. Params are arguments (never constants); the
optimizer update donates params and state. Gradients and their accumulation buffers come out sharded like the
params (a reduce-scatter, never a replicated all-reduce): `functions(sc, param_shardings)` builds the jitted
programs with those output shardings (also what a deviceless AOT compile lowers), and `micro_grads` /
`accumulate` / `logprobs` call them with the shardings of the params they are given.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from lrl_jax.model import attention
from lrl_jax.model.config import ModelConfig
from lrl_jax.rl import layout, losses


class MicroBatch(NamedTuple):
  """Rows of one micro-batch: everything [rows, L] except advantages [rows]."""
  tokens: jax.Array
  noisy_masked: jax.Array
  valid: jax.Array
  scored: jax.Array
  advantages: jax.Array
  logp_old: jax.Array
  logp_ref: jax.Array
  w_policy: jax.Array
  w_kl: jax.Array
  w_nll: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the compiled step functions."""
  model: ModelConfig
  loss: losses.LossConfig
  block_size: int
  dtype: str = "float32"
  remat: str = "none"
  q_chunk: int = 0
  noisy_start: int = 0  # layout.noisy_start of the batch: the noisy window holds L - noisy_start positions
  attn_impl: str = "auto"  # attention backend; "auto": attention.training_backend of the params' devices
  on_policy: bool = False  # logp_old is the current policy's own (stop_gradient of logp): mb.logp_old is not read


def _logprobs(params, batch_tokens, noisy_masked, valid, sc: StepConfig, router_stats: bool = False):
  return layout.row_logprobs(params, sc.model, batch_tokens, noisy_masked, valid, block_size=sc.block_size,
                             dtype=jnp.dtype(sc.dtype), remat=sc.remat, q_chunk=sc.q_chunk or None,
                             start=sc.noisy_start, attn_impl=sc.attn_impl, router_stats=router_stats)


def _loss(params, mb: MicroBatch, sc: StepConfig, router_coefficients=None):
  logp, entropy, *router = _logprobs(params, mb.tokens, mb.noisy_masked, mb.valid, sc, sc.model.is_moe)
  scored = mb.scored.astype(bool)
  logp = jnp.where(scored, logp, 0.0)  # unscored positions never contribute (nor a -inf at a pad)
  weights = losses.LossWeights(mb.w_policy, mb.w_kl, mb.w_nll)
  # on_policy: the params are those that sampled (one update per step), so the ratio is 1 and its gradient is ∇logp
  logp_old = jax.lax.stop_gradient(logp) if sc.on_policy else jnp.where(scored, mb.logp_old, 0.0)
  total, aux = losses.rl_loss(logp, logp_old, jnp.where(scored, mb.logp_ref, 0.0), mb.advantages, scored, weights,
                              sc.loss, entropy=entropy)
  if router:  # the update's load-balancing loss, this micro-batch's part of it (losses.router_coefficients)
    return losses.with_router(total, aux, router[0], router_coefficients, sc.loss)
  return total, aux


def _grads(params, mb: MicroBatch, sc: StepConfig, router_coefficients=None):
  (_, aux), grads = jax.value_and_grad(_loss, has_aux=True)(params, mb, sc, router_coefficients)
  return grads, aux


def _router_load(params, batch_tokens, noisy_masked, valid, sc: StepConfig):
  """The rows' router load [layers, experts] and token count [layers] (an MoE model's forward, no gradient)."""
  stats = _logprobs(params, batch_tokens, noisy_masked, valid, sc, True)[2]
  return stats.load, stats.tokens


class StepFunctions(NamedTuple):
  """The jitted programs of one StepConfig and param sharding (lower them for AOT, call them to run)."""
  logprobs: Callable  # (params, tokens, noisy_masked, valid) -> logp [rows, L]
  micro_grads: Callable  # (params, mb[, router coefficients]) -> (grads, aux) of an accumulation's first micro-batch
  accumulate: Callable  # (params, grads, aux, mb[, coefficients]) -> (grads, aux) plus one micro-batch (donated)
  router_load: Callable  # (params, tokens, noisy_masked, valid) -> (load [layers, experts], tokens [layers])


def resolve(sc: StepConfig, devices) -> StepConfig:
  """sc with attn_impl "auto" replaced by the training attention of `devices`' platform."""
  if sc.attn_impl != "auto":
    return sc
  return dataclasses.replace(sc, attn_impl=attention.training_backend(devices))


@functools.lru_cache(maxsize=None)
def _functions(sc: StepConfig, shardings: tuple | None) -> StepFunctions:
  _CREATED.append((sc, shardings))
  out, whole = {}, {}
  if shardings is not None:
    treedef, leaves = shardings
    replicated = NamedSharding(leaves[0].mesh, PartitionSpec())
    out = {"out_shardings": (jax.tree.unflatten(treedef, leaves), replicated)}
    whole = {"out_shardings": replicated}  # sums every process reads whole (multihost.host)
  grads = lambda params, mb, coefficients=None: _grads(params, mb, sc, coefficients)

  def accumulate(params, grads_in, aux, mb, coefficients=None):
    g, a = _grads(params, mb, sc, coefficients)
    return jax.tree.map(jnp.add, grads_in, g), losses.combine_aux(aux, a)

  return StepFunctions(jax.jit(lambda params, *rows: _logprobs(params, *rows, sc)[0]), jax.jit(grads, **out),
                       jax.jit(accumulate, donate_argnums=(1, 2), **out),
                       jax.jit(lambda params, *rows: _router_load(params, *rows, sc), **whole))


def functions(sc: StepConfig, param_shardings: Any = None) -> StepFunctions:
  """The step programs of `sc` (attn_impl resolved), gradients sharded as `param_shardings` (NamedShardings) if given.

  Cached per (sc, shardings): calling it again never recompiles.
  """
  if param_shardings is None:
    return _functions(resolve(sc, jax.devices()), None)
  leaves, treedef = jax.tree.flatten(param_shardings)
  return _functions(resolve(sc, leaves[0].mesh.devices.flat), (treedef, tuple(leaves)))


def _shardings_of(params) -> Any:
  """The params' NamedShardings (a pytree like params), or None when they are not all mesh-sharded arrays."""
  shardings = [getattr(x, "sharding", None) for x in jax.tree.leaves(params)]
  if not shardings or not all(isinstance(s, NamedSharding) for s in shardings):
    return None
  return jax.tree.unflatten(jax.tree.structure(params), shardings)


class _Program:
  """One step program called like a jit with a static `sc=`: picks `functions(sc, shardings of the params)`.

  `lower(*args, sc=)` lowers it for abstract arguments (ShapeDtypeStructs with shardings); `_cache_size()` counts
  its compiled executables over every StepConfig and sharding so far.
  """

  def __init__(self, name: str, doc: str):
    self.name, self.__doc__ = name, doc

  def _fn(self, args, sc: StepConfig):
    return getattr(functions(sc, _shardings_of(args[0])), self.name)

  def __call__(self, *args, sc: StepConfig):
    return self._fn(args, sc)(*args)

  def lower(self, *args, sc: StepConfig):
    return self._fn(args, sc).lower(*args)

  def _cache_size(self) -> int:
    cached = [_functions(*key) for key in _CREATED]
    return sum(getattr(fns, self.name)._cache_size() for fns in cached)


_CREATED: list[tuple] = []  # the (sc, shardings) keys `_functions` has built, for `_cache_size`

logprobs = _Program("logprobs", "(params, tokens, noisy_masked, valid, *, sc) -> log-probs [rows, L], no gradient.")
micro_grads = _Program("micro_grads", "(params, mb[, router coefficients], *, sc) -> (grads sharded like params, aux) "
                       "of a first micro-batch.")
accumulate = _Program("accumulate", "(params, grads, aux, mb[, router coefficients], *, sc) -> (grads, aux) plus one "
                      "micro-batch (donated).")
router_load = _Program("router_load", "(params, tokens, noisy_masked, valid, *, sc) -> an MoE model's router load "
                       "[layers, experts] and tokens [layers] over the rows.")


def make_apply(optimizer: optax.GradientTransformation, out_shardings=None):
  """jit of (params, opt_state, grads) -> (params, opt_state, grad_norm), donating params and state."""

  def apply(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

  kwargs = {} if out_shardings is None else {"out_shardings": (*out_shardings, None)}
  return jax.jit(apply, donate_argnums=(0, 1), **kwargs)
