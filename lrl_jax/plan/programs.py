"""The programs one RL step runs, as the trainer calls them, with abstract sharded arguments (nothing allocated).

A `Program` is a jitted function plus abstract arguments (`jax.ShapeDtypeStruct`s carrying their shardings), so
`fn.lower(*args, **kwargs).compile()` builds exactly the executable the trainer would run. `Setup` holds the
run's model, mesh and state shapes; a `Knob` is one setting the search may shrink (rollout batch, micro-batch rows)
with the programs it changes.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from lrl_jax import config_parts, defaults
from lrl_jax.decode import DecodeConfig
from lrl_jax.model import init_params
from lrl_jax.model.config import ModelConfig
from lrl_jax.parallel import mesh as mesh_lib
from lrl_jax.rl import batch as batch_lib
from lrl_jax.rl import layout, losses, optim, step as step_lib
from lrl_jax.weights import hf


class ResponseLengths(NamedTuple):
  """Response tokens as a log-normal (median, sigma), capped at max_new_tokens: the lengths a model really writes,
  for the FLOPs of a step (memory is always planned at the cap, which a run can reach)."""
  median: float
  sigma: float

  def _quantiles(self, cap: int, n: int = 2000) -> list[float]:
    normal = statistics.NormalDist()
    return [min(cap, self.median * math.exp(self.sigma * normal.inv_cdf((i + 0.5) / n))) for i in range(n)]

  def mean_blocks(self, block_size: int, cap: int) -> float:
    """E[ceil(length / block_size)]: the blocks a response decodes."""
    q = self._quantiles(cap)
    return sum(math.ceil(x / block_size) for x in q) / len(q)

  def longest(self, count: int, cap: int) -> int:
    """The typical longest of `count` responses: the 1 - 1/(count + 1) quantile, capped."""
    q = 1 - 1 / (count + 1)
    return int(min(cap, math.ceil(self.median * math.exp(self.sigma * statistics.NormalDist().inv_cdf(q)))))


class Program(NamedTuple):
  """One compiled program of a step: `fn.lower(*args, **kwargs)`; `calls` per step (None: data-dependent)."""
  name: str
  fn: Any  # a jax.jit-wrapped function (its donation is part of it)
  args: Any  # tuple of pytrees of jax.ShapeDtypeStruct with shardings, or a function of the programs compiled
  # before it ({name: Compiled}) returning one, when it takes their outputs as they are placed
  kwargs: dict  # static keyword arguments
  calls: float | None = 1
  mesh: Any = None  # traced under mesh_lib.activate(mesh) when set (the model's logical constraints)
  loop_trips: tuple[float, ...] = ()  # assumed trips of data-dependent loops by nesting depth (FLOPs estimate)


class Knob(NamedTuple):
  """A setting the search may lower: `name` (config key), its `value`, the step between candidates, and the
  programs it shapes, built for any candidate value."""
  name: str
  value: int
  multiple: int
  build: Callable[[int], list[Program]]


@dataclasses.dataclass
class Setup:
  """A run's model, settings, mesh and per-device state as the trainer holds it."""
  config: Any  # the ml_collections config
  cfg: ModelConfig
  mesh: Any
  dcfg: DecodeConfig
  sc: step_lib.StepConfig
  loss_cfg: losses.LossConfig
  optimizer: Any
  state: dict  # name -> abstract pytree (params, opt_state, ref_params)
  prompt_len: int  # prompt bucket of the rollout and of the training rows
  tpf: float  # tokens per denoising forward assumed for the rollout's FLOPs
  lengths: ResponseLengths | None = None  # response lengths for FLOPs (None: every response at max_new_tokens)

  def response_tokens(self) -> int:
    """The longest response of a step the programs are shaped for: max_new_tokens, or the typical longest of a
    step's responses under `lengths`."""
    r = self.config.rollout
    cap = r.max_new_tokens
    return cap if self.lengths is None else self.lengths.longest(r.num_prompts * r.num_responses, cap)

  def blocks_per_response(self) -> float:
    """Blocks one response decodes: all of max_new_tokens, or the mean under `lengths`."""
    cap, bs = self.config.rollout.max_new_tokens, self.dcfg.block_size
    return -(-cap // bs) if self.lengths is None else self.lengths.mean_blocks(bs, cap)

  @property
  def batch_shards(self) -> int:
    """Devices a batch's rows are split over (mesh data x fsdp x expert)."""
    return self.mesh.shape["data"] * self.mesh.shape["fsdp"] * self.mesh.shape["expert"]


def abstract(tree, shardings):
  """ShapeDtypeStructs of `tree`'s leaves carrying `shardings` (a matching tree of NamedShardings)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard of each leaf)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * itemsize(x.dtype)
  return total


def itemsize(dtype) -> int:
  """Bytes per element; extended dtypes carry their own (a PRNG key<fry> is 2 x uint32: 8)."""
  return dtype.itemsize if jax.dtypes.issubdtype(dtype, jax.dtypes.extended) else jnp.dtype(dtype).itemsize


def state_bytes(s: "Setup") -> dict[str, int]:
  """Per-device bytes of each part of the state the trainer keeps all run (params, opt_state, ref_params)."""
  return {k: device_bytes(v) for k, v in s.state.items()}


def export_bytes(params) -> int:
  """Device bytes of the largest piece the HF export gathers at once: one layer of a stacked tensor, or a row block
  of a top-level one, in the params' dtype and whole on every device (an upper bound)."""
  out = 0
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    itemsize = jnp.dtype(x.dtype).itemsize
    if any(getattr(k, "key", None) == "layers" for k in path):
      out = max(out, math.prod(x.shape[1:]) * itemsize)
    else:
      out = max(out, min(math.prod(x.shape) * itemsize, hf.BLOCK_BYTES))
  return out


def build_setup(config, cfg: ModelConfig, mesh, prompt_len: int, tpf: float, attention: str = "auto",
                lengths: ResponseLengths | None = None) -> Setup:
  """State shapes and shardings exactly as `run.setup` and `rl.learner` build them (float32 master params).

  `attention`: the training attention backend to compile; "auto" lets the step choose from the mesh's platform as
  the trainer does.
  """
  loss_cfg = config_parts.loss_config(config)
  optimizer = optim.make_optimizer(**config.optim)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  p_shard = mesh_lib.param_shardings(cfg, params, mesh)
  o_shard = mesh_lib.opt_state_shardings(optimizer, params, p_shard, mesh)
  state = {"params": abstract(params, p_shard),
           "opt_state": abstract(jax.eval_shape(optimizer.init, params), o_shard)}
  if loss_cfg.kl_beta:
    compute = jnp.dtype(config.model.dtype)  # the trainer keeps the reference in the compute dtype
    state["ref_params"] = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, compute, sharding=x.sharding),
                                       state["params"])
  r = config.rollout
  sc = step_lib.StepConfig(cfg, loss_cfg, config.rl.train_block_size or r.block_size, config.model.dtype,
                           config.model.remat, config.model.q_chunk)
  if attention != "auto":
    sc = dataclasses.replace(sc, attn_impl=attention)
  dcfg = config_parts.decode_config(config, defaults.parse_stop_ids(r.stop_ids) or ())
  return Setup(config, cfg, mesh, dcfg, sc, loss_cfg, optimizer, state, prompt_len, tpf, lengths)


def row_length(s: Setup) -> int:
  """Training row length: the longest row (prompt bucket + max_new_tokens) in the trainer's length bucket."""
  return batch_lib.length_bucket(s.prompt_len + s.response_tokens(), s.sc.block_size,
                                 s.config.train.row_len_bucket)


def _step_config(s: Setup, rows: int, length: int) -> step_lib.StepConfig:
  """The trainer's StepConfig for rows whose responses (masked in the noisy copy) start after the prompt."""
  noisy = np.zeros((rows, length), bool)
  noisy[:, s.prompt_len:] = True
  return dataclasses.replace(s.sc, noisy_start=layout.noisy_start(noisy, s.sc.block_size))


def _rows(s: Setup, rows: int, length: int, dtype, ndim: int = 2):
  shape = (rows, length)[:ndim]
  return jax.ShapeDtypeStruct(shape, dtype, sharding=mesh_lib.batch_sharding(s.mesh, ndim))


def micro_batch(s: Setup, rows: int, length: int) -> step_lib.MicroBatch:
  """Abstract micro-batch as `batch.micro_batches` fills it, rows over (data, fsdp)."""
  kinds = {"tokens": jnp.int32, "noisy_masked": jnp.bool_, "valid": jnp.bool_, "scored": jnp.bool_}
  field = lambda f: (_rows(s, rows, length, jnp.float32, 1) if f == "advantages"  # [rows]; the rest [rows, L]
                     else _rows(s, rows, length, kinds.get(f, jnp.float32)))
  return step_lib.MicroBatch(**{f: field(f) for f in step_lib.MicroBatch._fields})


def step_counts(s: Setup, micro: int) -> dict[str, float]:
  """Calls per step of each training program: every response kept, one row per sequence (block_masked)."""
  c = s.config
  sequences = c.rollout.num_prompts * c.rollout.num_responses
  per = c.train.sequences_per_update
  updates = max(1, -(-sequences // per)) if per else 1
  micro_per_update = -(-(sequences // updates) // micro)
  # with the load-balancing loss on, each update's router-load pass: the same forward as a log-prob call
  router = updates * micro_per_update if _router_loss(s.sc) else 0
  return {"logprobs": (2 if "ref_params" in s.state else 1) * -(-sequences // micro) + router,
          "micro_grads": updates, "accumulate": updates * (micro_per_update - 1), "apply": updates}


def _router_loss(sc: step_lib.StepConfig) -> bool:
  return sc.model.is_moe and bool(sc.loss.router_aux_loss_coef)


def outputs(compiled, index=None):
  """Abstract outputs (shape, dtype, sharding) of a compiled program, as the next program receives them."""
  out = compiled.out_info if index is None else compiled.out_info[index]
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), out)


def train_programs(s: Setup, micro: int) -> list[Program]:
  """logp_old/ref, micro_grads and accumulate at `micro` rows per micro-batch: the programs the knob shapes.

  accumulate receives micro_grads' outputs placed as that program returns them (`args` is then a function of the
  programs compiled before it).
  """
  length = row_length(s)
  sc = _step_config(s, micro, length)
  params, mb = s.state["params"], micro_batch(s, micro, length)
  counts = step_counts(s, micro)
  replicated = NamedSharding(s.mesh, PartitionSpec())
  coefficients = ((jax.ShapeDtypeStruct((sc.model.num_experts,), jnp.float32, sharding=replicated),)
                  if _router_loss(sc) else ())  # the load-balancing loss's terms (losses.router_coefficients)
  return [
      Program("logp_old/ref", step_lib.logprobs, (params, mb.tokens, mb.noisy_masked, mb.valid), {"sc": sc},
              counts["logprobs"], s.mesh),
      Program("micro_grads", step_lib.micro_grads, (params, mb, *coefficients), {"sc": sc}, counts["micro_grads"],
              s.mesh),
      Program("accumulate", step_lib.accumulate,
              lambda done: (params, *outputs(done["micro_grads"]), mb, *coefficients), {"sc": sc},
              counts["accumulate"], s.mesh),
  ]


def apply_program(s: Setup, micro: int) -> Program:
  """The optimizer update (`step.make_apply` with the trainer's output shardings) on micro_grads' gradients."""
  p_shard = jax.tree.map(lambda x: x.sharding, s.state["params"])
  o_shard = jax.tree.map(lambda x: x.sharding, s.state["opt_state"])
  fn = step_lib.make_apply(s.optimizer, (p_shard, o_shard))
  return Program("apply", fn, lambda done: (s.state["params"], s.state["opt_state"], outputs(done["micro_grads"], 0)),
                 {}, step_counts(s, micro)["apply"], s.mesh)


def train_knob(s: Setup) -> Knob:
  """train.micro_batch_rows: a multiple of the devices the rows are split over."""
  return Knob("train.micro_batch_rows", s.config.train.micro_batch_rows, s.batch_shards,
              lambda micro: train_programs(s, micro))
