"""The full training config schema with the SPEC §7 defaults; files in configs/ start from it and override.

The returned ConfigDict is locked: a mistyped key in a config file or a `--config.x.y=v` override fails with
ml_collections' "Did you mean ..." suggestion. `None`-valued shaping/loss fields mean "as the algorithm says".
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.algorithm = "lightningrl"  # lightningrl | grpo | grpo_traj (SPEC §7.5)

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""  # HF or Orbax model dir; "" builds model.tiny from scratch (warm start required)
  c.model.dtype = "bfloat16"  # compute dtype; master weights stay float32
  c.model.remat = "dots"  # none | dots | full
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
  c.rollout.batch_size = 64  # sequences decoded together
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

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100
  c.train.micro_batch_rows = 8
  c.train.sequences_per_update = 0  # kept responses per optimizer update (0 = all of a step in one update)
  c.train.row_len_bucket = 0  # pad row length to a multiple of this (0 = next power of two of blocks)
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

  c.debug = ml_collections.ConfigDict(dict(kill_at=""))  # fault injection for resume tests: "PHASE@STEP"
  c.lock()
  return c


def _keys(config, prefix: str = "") -> list[str]:
  out = []
  for k, v in config.items():
    out.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(_keys(v, f"{prefix}{k}."))
  return out


def check_overrides(argv: list[str]) -> None:
  """Exit with one clear message when a `--config.KEY=...` names no key of the config file, suggesting the closest.

  ml_collections raises a bare KeyError deep in flag parsing; this check runs first and names the key.
  """
  import difflib
  import runpy
  import sys

  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path is None and "--config" in argv[:-1]:
    path = argv[argv.index("--config") + 1]
  if path is None:
    return
  path, _, arg = path.partition(":")  # configs/demo.py:grpo passes "grpo" to get_config
  if not path.endswith(".py"):
    return
  try:
    get_config = runpy.run_path(path)["get_config"]
    keys = _keys(get_config(arg) if arg else get_config())
  except (OSError, KeyError) as e:
    sys.exit(f"error: cannot load config file {path}: {e}")
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
      if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        sys.exit(f"error: unknown config key '{key}' in {path}{hint}")
