"""The full training config schema with the SPEC §7 defaults, and its validation (one function per section).

Files in configs/ start from `base_config()` and override. The ConfigDict is locked, so a mistyped key fails (the
CLI names the closest key); `None`-valued shaping/loss fields mean "as the algorithm says". `validate(config)` runs
every section's check before any work; each problem is one `ConfigValueError` naming the key (`config.a.b: ...`).
"""

from __future__ import annotations

import functools
import math
import os

import ml_collections
from ml_collections.config_dict import placeholder

from lrl_jax.errors import UserError

ALGORITHMS = ("lightningrl", "grpo", "grpo_traj")
DTYPES = ("float32", "bfloat16")
TOKENIZERS = ("chars", "words")
KILL_PHASES = ("rollout", "update", "metrics", "save", "saved")  # debug.kill_at; see rl/trainer.py


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.algorithm = "lightningrl"  # lightningrl | grpo | grpo_traj (SPEC §7.5)

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""  # HF or Orbax model dir; "" builds model.tiny from scratch (warm start required)
  c.model.dtype = "bfloat16"  # compute dtype; master weights stay float32
  c.model.remat = "dots"  # none | dots | attn | full | offload (model/remat.py)
  c.model.q_chunk = 0  # query chunk of the training attention (0: whole rows)
  c.model.tokenizer = "chars"  # tokenizer of the from-scratch tiny model: chars | words (demo vocabulary)
  c.model.tiny = ml_collections.ConfigDict(dict(vocab_size=128, hidden_size=128, num_layers=4, num_heads=4,
                                                num_kv_heads=2, head_dim=32, intermediate_size=384))

  c.data = ml_collections.ConfigDict()
  c.data.train = "demo"  # "demo" (procedural tasks) or a dataset file (SPEC §8 formats) or a sample name
  c.data.eval = ""  # "" = none; "demo" or a file
  c.data.demo_difficulty = 1
  c.data.demo_size = 4096
  c.data.eval_size = 128
  c.data.shuffle_seed = 0

  c.rollout = ml_collections.ConfigDict()
  c.rollout.num_prompts = 128
  c.rollout.num_responses = 32
  c.rollout.block_size = 32
  c.rollout.steps = 0  # 0 = block_size
  c.rollout.strategy = "low_confidence_dynamic"
  c.rollout.threshold = 0.9
  c.rollout.temperature = 1.0
  c.rollout.top_k = 0
  c.rollout.top_p = 1.0
  c.rollout.max_new_tokens = 8192
  c.rollout.batch_size = 64  # engine slots: sequences decoded together (split over the mesh's data axes)
  c.rollout.pool_tokens = 0  # KV-cache pool in tokens over all slots (0 = every slot full: never preempts)
  c.rollout.page_size = 0  # KV page in tokens, a multiple of block_size (0 = block_size)
  c.rollout.fuse_commit = False  # commit block k and denoise block k+1's first step in one call (2B-token windows)
  c.rollout.forwards_per_call = 64  # forwards the engine runs on device between host refills, at most
  c.rollout.max_prompt_len = 0  # longest prompt a slot holds (0 = the longest prompt of the training data)
  c.rollout.stop_ids = ""  # comma-separated; "" = the checkpoint's eos ids

  c.rl = ml_collections.ConfigDict()
  c.rl.acc_norm = placeholder(bool)
  c.rl.tpf_norm_mode = placeholder(str)
  c.rl.tpf_coefficient = placeholder(float)
  c.rl.filter_all_wrong = placeholder(bool)
  c.rl.filter_tpf_threshold = placeholder(float)
  c.rl.adv_norm_mode = placeholder(str)
  c.rl.logp_mode = placeholder(str)
  c.rl.speed_reward_correct_only = placeholder(bool)  # extension: no speed reward for wrong responses (off: SPEC)
  c.rl.reward_norm = placeholder(str)  # decoupled (SPEC) | joint: one z-score of correctness + tpf (ablation)
  c.rl.shrink = 1
  c.rl.resample_filtered = False
  c.rl.train_block_size = 0  # 0 = rollout.block_size

  c.loss = ml_collections.ConfigDict()
  c.loss.eps = placeholder(float)
  c.loss.eps_high = placeholder(float)
  c.loss.nll_loss_weight = placeholder(float)
  c.loss.kl_beta = placeholder(float)
  c.loss.kl_estimator = placeholder(str)
  c.loss.policy_reduction = placeholder(str)
  c.loss.kl_reduction = placeholder(str)
  c.loss.nll_reduction = placeholder(str)

  c.optim = ml_collections.ConfigDict(dict(lr=1e-6, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=10,
                                           max_grad_norm=1.0))
  c.optim.reset_per_step = False  # the authors' fresh AdamW (warmup from rate 0) every RL step (rl/optim.py)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100
  c.train.micro_batch_rows = 8
  c.train.sequences_per_update = 0  # kept responses per optimizer update (0 = all of a step in one update)
  c.train.recompute_old_logp = True  # False: with one update per step, logp_old = the policy's own (no extra pass)
  c.train.row_len_bucket = 0  # pad row length to a multiple of this (0 = 8 buckets per octave of blocks)
  c.train.eval_every = 0
  c.train.checkpoint_every = 1
  c.train.keep_last = 3
  c.train.keep_every = 0
  c.train.export_hf_every = 0
  c.train.progress = True

  c.eval = ml_collections.ConfigDict(dict(thresholds=(0.9, 0.7, 0.5), batch_size=64))  # greedy; first = headline

  c.reward = ml_collections.ConfigDict(dict(math_timeout=5.0, workers=0))

  c.warm_start = ml_collections.ConfigDict()
  c.warm_start.steps = 0  # SFT steps on the training data's reference solutions before RL (0 = none)
  c.warm_start.lr = 1e-3
  c.warm_start.batch_size = 32
  c.warm_start.warmup_steps = 20
  c.warm_start.max_mask_rate = 1.0  # per-block mask rate ~ U(0, max]; below 1 the model starts slow to decode

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.logging = ml_collections.ConfigDict(dict(tensorboard=True, wandb=False, wandb_project="lrl_jax"))

  c.debug = ml_collections.ConfigDict(dict(kill_at=""))  # fault injection for resume tests: "PHASE@STEP" (KILL_PHASES)
  c.lock()
  return c




class ConfigValueError(UserError):
  """A config value out of range, of the wrong kind, or contradicting another; the message starts with its key."""


def _fail(key: str, text: str):
  raise ConfigValueError(f"config.{key}: {text}")


def _value(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def _int(config, key: str, low: int | None = None, high: int | None = None, why: str = "") -> int:
  value = _value(config, key)
  if isinstance(value, bool) or not isinstance(value, int):
    _fail(key, f"must be an integer, got {value!r}")
  if (low is not None and value < low) or (high is not None and value > high):
    bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
    _fail(key, f"must be {bounds}, got {value}{why}")
  return value


def _float(config, key: str, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, why: str = "") -> float:
  """A finite number in the given range (open or closed ends); None (a placeholder left unset) passes."""
  value = _value(config, key)
  if value is None:
    return value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    _fail(key, f"must be a number, got {value!r}")
  if not math.isfinite(value):
    _fail(key, f"must be finite, got {value}")
  below = low is not None and (value <= low if low_open else value < low)
  above = high is not None and (value >= high if high_open else value > high)
  if below or above:
    left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    bounds = f"in {left}, {right}" if low is not None and high is not None else (
      f"{'>' if low_open else '>='} {low:g}" if high is None else f"{'<' if high_open else '<='} {high:g}")
    _fail(key, f"must be {bounds}, got {value:g}{why}")
  return value


def _choice(config, key: str, choices) -> str:
  value = _value(config, key)
  if value is not None and value not in choices:
    _fail(key, f"must be one of {tuple(choices)}, got {value!r}")
  return value


def parse_stop_ids(text: str, key: str = "stop_ids") -> tuple[int, ...] | None:
  """`"151645,151643"` → ids; `"none"` → () (no stop); `""` → None (the checkpoint's own eos ids)."""
  text = str(text).strip()
  if not text:
    return None
  if text.lower() == "none":
    return ()
  try:
    ids = tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise ConfigValueError(f"{key}: {text!r} must be comma-separated integers, 'none' or '' (the checkpoint's "
                           "eos ids)") from None
  if any(i < 0 for i in ids):
    raise ConfigValueError(f"{key}: {text!r} holds a negative id")
  return ids


@functools.lru_cache(maxsize=8)
def _model_config(path: str):
  from lrl_jax.model.config import load_config
  return load_config(path)


def check_run(c) -> None:
  _int(c, "seed", 0, 2**31 - 1)
  _choice(c, "algorithm", ALGORITHMS)


def check_model(c) -> None:
  """dtype, remat, tokenizer and tiny-model shape; a checkpoint dir must exist with a usable config and tokenizer."""
  from lrl_jax.model.remat import POLICIES
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
    from lrl_jax.checkpoints import is_run_dir, model_files_dir
    from lrl_jax.weights import is_hf_dir, is_orbax_dir
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
    from lrl_jax.data.formats import DataFormatError, dataset_path
    try:
      dataset_path(spec)
    except DataFormatError as e:
      _fail(key, str(e))


def check_data(c) -> None:
  """Dataset files or sample names exist; demo settings are in range."""
  from lrl_jax.data import demo_tasks
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
  """Sizes, decoding settings, groups of at least two responses; agreement with the checkpoint's config."""
  from lrl_jax.decode.config import STRATEGIES
  r = c.rollout
  _int(c, "rollout.num_prompts", 1)
  _int(c, "rollout.num_responses", 2, why=": responses are compared within their prompt's group (one response "
       "would make every advantage 0)")
  _int(c, "rollout.block_size", 1)
  _int(c, "rollout.steps", 0, r.block_size, why=" (0 = block_size; at most rollout.block_size)")
  _choice(c, "rollout.strategy", STRATEGIES)
  _float(c, "rollout.threshold", 0.0, 1.0)
  _float(c, "rollout.temperature", 0.0)
  _int(c, "rollout.top_k", 0)
  _float(c, "rollout.top_p", 0.0, 1.0, low_open=True)
  _int(c, "rollout.max_new_tokens", 1)
  _int(c, "rollout.batch_size", 1)
  _int(c, "rollout.pool_tokens", 0)
  _int(c, "rollout.page_size", 0)
  if r.page_size % r.block_size:
    _fail("rollout.page_size", f"{r.page_size} is not a multiple of rollout.block_size={r.block_size}")
  _int(c, "rollout.forwards_per_call", 1)
  _int(c, "rollout.max_prompt_len", 0)
  stops = parse_stop_ids(r.stop_ids, "config.rollout.stop_ids")
  if c.model.checkpoint:
    from lrl_jax.checkpoints import model_files_dir
    cfg = _model_config(model_files_dir(c.model.checkpoint))
    block, positions, vocab = cfg.block_size, cfg.max_position_embeddings, cfg.vocab_size
  else:
    from lrl_jax.weights.tiny import tiny_config
    block, positions, vocab = None, tiny_config().max_position_embeddings, c.model.tiny.vocab_size
  if block and block % r.block_size and r.block_size % block:
    _fail("rollout.block_size", f"{r.block_size} and the model's block_size={block} do not divide one another")
  if r.max_new_tokens + r.block_size > positions:
    _fail("rollout.max_new_tokens", f"{r.max_new_tokens} leaves no room for a prompt within the model's "
          f"max_position_embeddings={positions}")
  for sid in stops or ():
    if sid >= vocab:
      _fail("rollout.stop_ids", f"stop id {sid} is outside the vocabulary (size {vocab})")


def check_rl(c) -> None:
  """Shaping settings (explicit values over the algorithm's) and the training block size."""
  from lrl_jax.rl import shaping
  _choice(c, "rl.tpf_norm_mode", shaping.TPF_NORM_MODES)
  _choice(c, "rl.adv_norm_mode", shaping.ADV_NORM_MODES)
  _choice(c, "rl.logp_mode", shaping.LOGP_MODES)
  _float(c, "rl.tpf_coefficient")
  _float(c, "rl.filter_tpf_threshold", 0.0)
  _int(c, "rl.shrink", 1)
  _int(c, "rl.train_block_size", 0)
  mode = c.rl.logp_mode or shaping.for_algorithm(c.algorithm).logp_mode
  if mode == "trajectory" and c.rl.train_block_size not in (0, c.rollout.block_size):
    _fail("rl.train_block_size", f"{c.rl.train_block_size}: trajectory rows rebuild the sampler's states, so the "
          f"training block size must be the rollout block size ({c.rollout.block_size}) or 0")


def check_loss(c) -> None:
  from lrl_jax.rl.losses import KL_ESTIMATORS, REDUCTIONS
  for name in ("eps", "eps_high", "nll_loss_weight", "kl_beta"):
    _float(c, f"loss.{name}", 0.0)
  _choice(c, "loss.kl_estimator", KL_ESTIMATORS)
  for name in ("policy_reduction", "kl_reduction", "nll_reduction"):
    _choice(c, f"loss.{name}", REDUCTIONS)


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
  import jax
  sizes = {}
  for name in ("data", "fsdp", "tensor"):
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
  batch = (devices // known if sizes["data"] == -1 else sizes["data"]) * (
    devices // known if sizes["fsdp"] == -1 else sizes["fsdp"])
  if c.train.micro_batch_rows % batch:
    _fail("train.micro_batch_rows", f"{c.train.micro_batch_rows} must be a multiple of the {batch} devices that "
          "share a batch (mesh data x fsdp)")


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
