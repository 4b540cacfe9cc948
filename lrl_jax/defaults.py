"""The full training config schema with the SPEC §7 defaults (configs/*.py start from `base_config()`).

The ConfigDict is locked, so a mistyped key fails (the CLI names the closest key); `None`-valued shaping/loss fields
mean "as the algorithm says" (rl/algorithms.py). This module imports no stage, so loading a config file costs no JAX
import; `run/validate.py` checks a config before any work.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from lrl_jax.checks import ConfigValueError

TOKENIZERS = ("chars", "words")
KILL_PHASES = ("rollout", "update", "metrics", "save", "saved")  # debug.kill_at; see run/trainer.py


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
  c.loss.router_aux_loss_coef = placeholder(float)  # MoE models only (0 = off): the update's load-balancing loss

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

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, expert=1, tensor=1))

  c.logging = ml_collections.ConfigDict(dict(tensorboard=True, wandb=False, wandb_project="lrl_jax"))

  c.debug = ml_collections.ConfigDict(dict(kill_at=""))  # fault injection for resume tests: "PHASE@STEP" (KILL_PHASES)
  c.lock()
  return c


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
