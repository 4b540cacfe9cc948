"""Config validation (lrl_jax/run/validate.py over the schema of lrl_jax/defaults.py): every shipped config passes; each bad value names its key."""

import glob
import os

import pytest

from lrl_jax import defaults
from lrl_jax.run import validate
from lrl_jax.model import remat
from lrl_jax.rl import algorithms
from tests.run.util import ROOT, load


@pytest.mark.parametrize("name", [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                  if not p.endswith(("eval.py", "compare.py"))])
def test_shipped_training_configs_validate(name):
  config = load(name)
  if config.model.checkpoint or config.data.train != "demo":  # paper configs point at files made by download/convert
    config.model.checkpoint, config.data.train, config.data.eval = "", "demo", "demo"
    config.warm_start.steps = 0
    config.mesh.fsdp = config.mesh.expert = config.mesh.tensor = 1  # one CPU device
    config.train.micro_batch_rows = 8
    config.rollout.max_new_tokens = 64  # the tiny stand-in model has 4096 positions, SDAR has 32768
  validate.validate(config)


def test_choices_match_the_stages():
  assert validate.ALGORITHMS is algorithms.ALGORITHMS and tuple(algorithms.SETTINGS) == validate.ALGORITHMS
  config = load("test")
  for name in remat.POLICIES:
    config.model.remat = name
    validate.check_model(config)


BAD = [
  ("optim.lr", float("nan"), "config.optim.lr: must be finite, got nan"),
  ("optim.lr", float("inf"), "config.optim.lr: must be finite, got inf"),
  ("optim.lr", -1e-3, "config.optim.lr: must be > 0, got -0.001"),
  ("optim.b2", 1.0, "config.optim.b2: must be in [0, 1), got 1"),
  ("rollout.num_responses", 1, "config.rollout.num_responses: must be >= 2, got 1"),
  ("rollout.num_prompts", 0, "config.rollout.num_prompts: must be >= 1, got 0"),
  ("rollout.block_size", 0, "config.rollout.block_size: must be >= 1, got 0"),
  ("rollout.steps", 9, "config.rollout.steps: must be in [0, 4], got 9"),
  ("rollout.threshold", 1.5, "config.rollout.threshold: must be in [0, 1], got 1.5"),
  ("rollout.top_p", 0.0, "config.rollout.top_p: must be in (0, 1], got 0"),
  ("rollout.max_new_tokens", 100_000_000, "config.rollout.max_new_tokens: 100000000 leaves no room for a prompt"),
  ("rollout.strategy", "fastest", "config.rollout.strategy: must be one of"),
  ("rollout.stop_ids", "2,x", "config.rollout.stop_ids: '2,x' must be comma-separated integers"),
  ("rollout.stop_ids", "2,999", "config.rollout.stop_ids: stop id 999 is outside the vocabulary (size 128)"),
  ("algorithm", "bogus", "config.algorithm: must be one of ('lightningrl', 'grpo', 'grpo_traj'), got 'bogus'"),
  ("optim.reset_per_step", True, "config.optim.reset_per_step: with one optimizer update per RL step"),
  ("train.micro_batch_rows", 0, "config.train.micro_batch_rows: must be >= 1, got 0"),
  ("train.checkpoint_every", 0, "config.train.checkpoint_every: must be >= 1, got 0"),
  ("train.row_len_bucket", 6, "config.train.row_len_bucket: 6 must be a multiple of the training block size (4)"),
  ("warm_start.steps", -3, "config.warm_start.steps: must be >= 0, got -3"),
  ("warm_start.max_mask_rate", 0.0, "config.warm_start.max_mask_rate: must be in (0, 1], got 0"),
  ("data.train", "nope/train.json", "config.data.train: nope/train.json: file not found"),
  ("data.train", "gsm9k", "config.data.train: gsm9k: neither a dataset file nor a shipped sample"),
  ("data.eval", "missing.jsonl", "config.data.eval: missing.jsonl: file not found"),
  ("data.demo_difficulty", 7, "config.data.demo_difficulty: must be in ["),
  ("model.checkpoint", "/nonexistent", "config.model.checkpoint: /nonexistent: directory not found"),
  ("model.dtype", "float16", "config.model.dtype: must be one of ('float32', 'bfloat16')"),
  ("model.tiny.num_kv_heads", 3, "config.model.tiny.num_kv_heads: 3 must divide model.tiny.num_heads=4"),
  ("model.tiny.head_dim", 15, "config.model.tiny.head_dim: must be even"),
  ("loss.kl_beta", -0.1, "config.loss.kl_beta: must be >= 0"),
  ("loss.kl_estimator", "k4", "config.loss.kl_estimator: must be one of ('k1', 'k2', 'k3')"),
  ("rl.tpf_norm_mode", "zscore", "config.rl.tpf_norm_mode: must be one of"),
  ("rl.tpf_coefficient", float("nan"), "config.rl.tpf_coefficient: must be finite"),
  ("rl.shrink", 0, "config.rl.shrink: must be >= 1"),
  ("rl.reward_norm", "summed", "config.rl.reward_norm: must be one of ('decoupled', 'joint'), got 'summed'"),
  ("loss.policy_reduction", "mean", "config.loss.policy_reduction: must be one of ('token', 'sequence')"),
  ("eval.thresholds", (), "config.eval.thresholds: must be a non-empty tuple"),
  ("eval.thresholds", (0.5, 2.0), "config.eval.thresholds: entry 1 must be a number in [0, 1], got 2.0"),
  ("reward.math_timeout", 0.0, "config.reward.math_timeout: must be > 0"),
  ("mesh.fsdp", 0, "config.mesh.fsdp: must be >= 1 or -1"),
  ("mesh.fsdp", 3, "config.mesh: {'data': -1, 'fsdp': 3, 'expert': 1, 'tensor': 1} does not fit the"),
  ("debug.kill_at", "lunch@2", "config.debug.kill_at: 'lunch@2' must be PHASE@STEP"),
  ("seed", -1, "config.seed: must be in [0, 2147483647], got -1"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_names_its_key(key, value, message):
  config = load("test")
  *sections, name = key.split(".")
  target = config
  for section in sections:
    target = target[section]
  target[name] = value
  with pytest.raises(defaults.ConfigValueError) as e:
    validate.validate(config)
  assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("changes, message", [
  ({"rl.logp_mode": "trajectory", "rl.train_block_size": 8},
   "config.rl.train_block_size: 8: trajectory rows rebuild the sampler's states"),
  ({"algorithm": "grpo_traj", "rl.train_block_size": 2}, "config.rl.train_block_size: 2: trajectory rows"),
  ({"warm_start.steps": 5, "data.train": "gsm8k"}, "config.warm_start.steps: 5: a warm start trains on reference"),
  ({"mesh.data": 1, "mesh.tensor": 1, "train.micro_batch_rows": 8}, None),
  ({"logging.wandb": True, "logging.wandb_project": ""}, "config.logging.wandb_project: is empty"),
])
def test_combinations(changes, message):
  config = load("test")
  for key, value in changes.items():
    section, name = key.split(".") if "." in key else (None, key)
    (config[section] if section else config)[name] = value
  if message is None:
    validate.validate(config)
    return
  with pytest.raises(defaults.ConfigValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate.validate(config)


def test_checkpoint_without_mask_token_or_tokenizer(tmp_path, tiny_hf_dir, hf_dir_without_mask):
  import shutil
  config = load("test")
  config.model.checkpoint = str(hf_dir_without_mask)
  with pytest.raises(defaults.ConfigValueError, match="has no 'mask_token_id'"):
    validate.validate(config)
  bare = tmp_path / "bare"
  shutil.copytree(tiny_hf_dir, bare, ignore=shutil.ignore_patterns("tokenizer*"))
  config.model.checkpoint = str(bare)
  with pytest.raises(defaults.ConfigValueError, match="no tokenizer files"):
    validate.validate(config)


def test_parse_stop_ids():
  assert defaults.parse_stop_ids("") is None and defaults.parse_stop_ids("none") == ()
  assert defaults.parse_stop_ids(" 151645, 151643 ") == (151645, 151643)
  for bad in ("1;2", "-1", "x"):
    with pytest.raises(defaults.ConfigValueError, match="stop_ids"):
      defaults.parse_stop_ids(bad)


def test_parts_are_the_algorithm_then_the_config():
  """config_parts is the one conversion: the algorithm's settings, then every value the config sets."""
  from lrl_jax import config_parts
  from lrl_jax.rl import losses, shaping
  for name in algorithms.ALGORITHMS:
    config = defaults.base_config()  # every shaping/loss value left to the algorithm
    config.algorithm = name
    assert config_parts.shaping_config(config) == shaping.for_algorithm(name)
    assert config_parts.loss_config(config) == losses.for_algorithm(name)
  config = load("test")
  config.algorithm, config.rl.tpf_coefficient, config.loss.kl_beta = "grpo", 0.5, 0.0
  assert config_parts.shaping_config(config).tpf_coefficient == 0.5
  assert config_parts.shaping_config(config).adv_norm_mode == "prompt_group"
  assert config_parts.loss_config(config).kl_beta == 0.0 and config_parts.loss_config(config).nll_loss_weight == 0.0
  dcfg = config_parts.decode_config(config, (2,), greedy=True, threshold=0.5)
  assert (dcfg.block_size, dcfg.steps, dcfg.threshold, dcfg.greedy, dcfg.stop_ids, dcfg.dtype) == (
      config.rollout.block_size, None, 0.5, True, (2,), config.model.dtype)
  config.loss.eps = -1.0
  with pytest.raises(defaults.ConfigValueError, match=r"^config.loss.eps: must be >= 0, got -1$"):
    config_parts.loss_config(config)


def test_a_part_names_its_own_field():
  """Each typed part checks its ranges itself; the message names the field (the config adds its section)."""
  from lrl_jax.checks import FieldError
  from lrl_jax.decode.config import DecodeConfig, DecodeError
  from lrl_jax.rl import losses, shaping
  with pytest.raises(DecodeError, match=r"^top_p: must be in \(0, 1\], got 0$"):
    DecodeConfig(top_p=0.0).validate()
  with pytest.raises(DecodeError, match=r"^steps: must be in \[0, 4\], got 5"):
    DecodeConfig(block_size=4, steps=5).validate()
  assert DecodeConfig(block_size=4, steps=0).validate().num_steps == 4
  with pytest.raises(FieldError, match=r"^kl_beta: must be >= 0, got -1$"):
    losses.LossConfig(kl_beta=-1.0)
  with pytest.raises(FieldError, match=r"^filter_tpf_threshold: must be finite, got nan$"):
    shaping.ShapingConfig(filter_tpf_threshold=float("nan"))
