"""A training config's validation, one function per section, before any work (`validate`).

The typed parts' own checks (config_parts.py builds them) run under their config keys, then what no part can see:
settings of sections without a part, values that must agree across sections, files, the model and the devices.
Each problem is one `ConfigValueError` naming the key (`config.a.b: ...`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax

from lrl_jax.checks import ConfigValueError, check_choice, check_float, check_int, keyed
from lrl_jax.config_parts import decode_config, loss_config, shaping_config
from lrl_jax.data import demo_tasks
from lrl_jax.data.formats import DataFormatError, dataset_path
from lrl_jax.decode.config import DTYPES
from lrl_jax.defaults import KILL_PHASES, TOKENIZERS, parse_stop_ids
from lrl_jax.model.config import load_config
from lrl_jax.model.remat import POLICIES
from lrl_jax.parallel.mesh import AXES, BATCH
from lrl_jax.rl.algorithms import ALGORITHMS
from lrl_jax.weights import is_hf_dir, is_orbax_dir
from lrl_jax.weights.run_dir import is_run_dir, model_files_dir
from lrl_jax.weights.tiny import tiny_config


def _fail(key: str, text: str):
  raise ConfigValueError(f"config.{key}: {text}")


def _value(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def _int(config, key: str, *bounds: int | None, why: str = "") -> int:
  with keyed():
    return check_int(key, _value(config, key), *bounds, why=why)


def _float(config, key: str, *bounds: float | None, why: str = "", **open_ends: bool) -> float:
  with keyed():
    return check_float(key, _value(config, key), *bounds, why=why, **open_ends)


def _choice(config, key: str, choices) -> str:
  with keyed():
    return check_choice(key, _value(config, key), choices)


@functools.lru_cache(maxsize=8)
def _model_config(path: str):
  return load_config(path)


def check_run(c) -> None:
  _int(c, "seed", 0, 2**31 - 1)
  _choice(c, "algorithm", ALGORITHMS)


def check_model(c) -> None:
  """dtype, remat, tokenizer and tiny-model shape; a checkpoint dir must exist with a usable config and tokenizer."""
  _choice(c, "model.dtype", DTYPES)
  _choice(c, "model.remat", tuple(POLICIES))
  _int(c, "model.q_chunk", 0)
  _choice(c, "model.tokenizer", TOKENIZERS)
  for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size"):
    _int(c, f"model.tiny.{name}", 1)
  tiny = c.model.tiny
  if tiny.num_heads % tiny.num_kv_heads:
    _fail("model.tiny.num_kv_heads", f"{tiny.num_kv_heads} must divide model.tiny.num_heads={tiny.num_heads}")
  if tiny.head_dim % 2:
    _fail("model.tiny.head_dim", f"must be even (RoPE), got {tiny.head_dim}")
  path = c.model.checkpoint
  if path:
    if not os.path.isdir(path):
      _fail("model.checkpoint", f"{path}: directory not found")
    if not (is_orbax_dir(path) or is_hf_dir(path) or is_run_dir(path)):
      _fail("model.checkpoint", f"{path}: no weights (neither an Orbax 'params/' dir, HF safetensors nor a run dir)")
    files = model_files_dir(path)
    cfg = _model_config(files)
    if cfg.mask_token_id is None:
      _fail("model.checkpoint", f"{files}/config.json has no 'mask_token_id'; block diffusion needs a mask token")
    if not any(os.path.exists(os.path.join(files, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
      _fail("model.checkpoint", f"{files}: no tokenizer files; training needs one to build prompts")


def _dataset(c, key: str) -> None:
  spec = _value(c, key)
  if spec and spec != "demo":
    try:
      dataset_path(spec)
    except DataFormatError as e:
      _fail(key, str(e))


def check_data(c) -> None:
  """Dataset files or sample names exist; demo settings are in range."""
  if not c.data.train:
    _fail("data.train", "is empty; give 'demo', a dataset file or a shipped sample name")
  _dataset(c, "data.train")
  _dataset(c, "data.eval")
  mixed = getattr(demo_tasks, "MIXED", None)  # a difficulty that mixes the others, where demo_tasks has one
  _int(c, "data.demo_difficulty", 1 if mixed is None else mixed, demo_tasks.MAX_DIFFICULTY,
       why="" if mixed is None else f" ({mixed}: mixed)")
  _int(c, "data.demo_size", 1)
  _int(c, "data.eval_size", 1)
  _int(c, "data.shuffle_seed", 0, 2**31 - 1)


def check_rollout(c) -> None:
  """Groups of at least two responses, the decoding settings (DecodeConfig's own checks), the engine's sizes; block
  size, prompt room and stop ids against the checkpoint's config (or the tiny model's)."""
  r = c.rollout
  _int(c, "rollout.num_prompts", 1)
  _int(c, "rollout.num_responses", 2, why=": responses are compared within their prompt's group (one response "
       "would make every advantage 0)")
  with keyed("rollout.", {"dtype": "model.dtype"}):
    dcfg = decode_config(c, ()).validate()
  _int(c, "rollout.batch_size", 1)
  _int(c, "rollout.pool_tokens", 0)
  _int(c, "rollout.page_size", 0)
  if r.page_size % r.block_size:
    _fail("rollout.page_size", f"{r.page_size} is not a multiple of rollout.block_size={r.block_size}")
  _int(c, "rollout.forwards_per_call", 1)
  _int(c, "rollout.max_prompt_len", 0)
  stops = parse_stop_ids(r.stop_ids, "config.rollout.stop_ids")
  cfg = (_model_config(model_files_dir(c.model.checkpoint)) if c.model.checkpoint else
         tiny_config(block_size=r.block_size, **c.model.tiny.to_dict()))
  if r.max_new_tokens + r.block_size > cfg.max_position_embeddings:
    _fail("rollout.max_new_tokens", f"{r.max_new_tokens} leaves no room for a prompt within the model's "
          f"max_position_embeddings={cfg.max_position_embeddings}")
  with keyed("rollout."):
    dataclasses.replace(dcfg, stop_ids=stops or ()).check_model(cfg.block_size, cfg.mask_token_id, cfg.vocab_size)


def check_rl(c) -> None:
  """Shaping settings (explicit values over the algorithm's; ShapingConfig's own checks) and the training block
  size, which trajectory rows tie to the rollout's."""
  mode = shaping_config(c).logp_mode
  _int(c, "rl.shrink", 1)
  _int(c, "rl.train_block_size", 0)
  if mode == "trajectory" and c.rl.train_block_size not in (0, c.rollout.block_size):
    _fail("rl.train_block_size", f"{c.rl.train_block_size}: trajectory rows rebuild the sampler's states, so the "
          f"training block size must be the rollout block size ({c.rollout.block_size}) or 0")


def check_loss(c) -> None:
  """Loss settings (explicit values over the algorithm's; LossConfig's own checks)."""
  loss_config(c)


def check_optim(c) -> None:
  _float(c, "optim.lr", 0.0, low_open=True, why=" (a negative rate would ascend the loss)")
  _float(c, "optim.b1", 0.0, 1.0, high_open=True)
  _float(c, "optim.b2", 0.0, 1.0, high_open=True)
  _float(c, "optim.eps", 0.0, low_open=True)
  _float(c, "optim.weight_decay", 0.0)
  _int(c, "optim.warmup_steps", 0)
  _float(c, "optim.max_grad_norm", 0.0, low_open=True)
  per_update = c.train.sequences_per_update or c.rollout.num_prompts * c.rollout.num_responses
  if c.optim.reset_per_step and c.optim.warmup_steps and per_update >= c.rollout.num_prompts * c.rollout.num_responses:
    _fail("optim.reset_per_step", f"with one optimizer update per RL step (train.sequences_per_update="
          f"{c.train.sequences_per_update}) every update runs at warmup rate 0; set train.sequences_per_update below "
          f"the {c.rollout.num_prompts * c.rollout.num_responses} responses of a step, or optim.warmup_steps=0")


def check_train(c) -> None:
  """Schedule and batch sizes; rows split evenly over the devices that share a batch."""
  _int(c, "train.steps", 0)
  _int(c, "train.micro_batch_rows", 1)
  _int(c, "train.sequences_per_update", 0)
  _int(c, "train.row_len_bucket", 0)
  block = c.rl.train_block_size or c.rollout.block_size
  if c.train.row_len_bucket % block:
    _fail("train.row_len_bucket", f"{c.train.row_len_bucket} must be a multiple of the training block size ({block})")
  for name in ("eval_every", "keep_every", "export_hf_every"):
    _int(c, f"train.{name}", 0)
  _int(c, "train.checkpoint_every", 1)
  _int(c, "train.keep_last", 1)


def check_eval(c) -> None:
  thresholds = c.eval.thresholds
  if not isinstance(thresholds, (tuple, list)) or not thresholds:
    _fail("eval.thresholds", f"must be a non-empty tuple of thresholds, got {thresholds!r}")
  for i, th in enumerate(thresholds):
    if isinstance(th, bool) or not isinstance(th, (int, float)) or not 0 <= th <= 1:
      _fail("eval.thresholds", f"entry {i} must be a number in [0, 1], got {th!r}")
  _int(c, "eval.batch_size", 1)


def check_reward(c) -> None:
  _float(c, "reward.math_timeout", 0.0, low_open=True)
  _int(c, "reward.workers", 0)


def check_warm_start(c) -> None:
  """Warm start needs reference solutions, which only the demo data provides."""
  if _int(c, "warm_start.steps", 0) == 0:
    return
  _float(c, "warm_start.lr", 0.0, low_open=True)
  _int(c, "warm_start.batch_size", 1)
  _int(c, "warm_start.warmup_steps", 0)
  _float(c, "warm_start.max_mask_rate", 0.0, 1.0, low_open=True)
  if c.data.train != "demo":
    _fail("warm_start.steps", f"{c.warm_start.steps}: a warm start trains on reference solutions, which only "
          "data.train='demo' provides; set warm_start.steps=0 or start from a trained checkpoint")


def check_mesh(c) -> None:
  """Mesh axes fit the devices; a micro-batch splits evenly over the data-parallel devices."""
  sizes = {}
  for name in AXES:
    value = _int(c, f"mesh.{name}", -1)
    if value == 0:
      _fail(f"mesh.{name}", "must be >= 1 or -1 (the devices left over), got 0")
    sizes[name] = value
  if list(sizes.values()).count(-1) > 1:
    _fail("mesh", f"at most one axis may be -1, got {sizes}")
  devices = jax.device_count()
  known = math.prod(v for v in sizes.values() if v != -1)
  if devices % known or (-1 not in sizes.values() and known != devices):
    _fail("mesh", f"{sizes} does not fit the {devices} devices")
  batch = math.prod(devices // known if sizes[a] == -1 else sizes[a] for a in BATCH)
  if c.train.micro_batch_rows % batch:
    _fail("train.micro_batch_rows", f"{c.train.micro_batch_rows} must be a multiple of the {batch} devices that "
          f"share a batch (mesh {' x '.join(BATCH)})")


def check_logging(c) -> None:
  if c.logging.wandb and not c.logging.wandb_project:
    _fail("logging.wandb_project", "is empty while logging.wandb is on")


def check_debug(c) -> None:
  kill = c.debug.kill_at
  if kill:
    phase, _, step = kill.partition("@")
    if phase not in KILL_PHASES or not step.isdigit():
      _fail("debug.kill_at", f"{kill!r} must be PHASE@STEP with PHASE one of {KILL_PHASES}")


SECTION_CHECKS = (check_run, check_model, check_data, check_rollout, check_rl, check_loss, check_optim, check_train,
                  check_eval, check_reward, check_warm_start, check_mesh, check_logging, check_debug)


def validate(config) -> None:
  """Every section's checks in order; the first problem raises ConfigValueError naming its key."""
  for check in SECTION_CHECKS:
    check(config)
