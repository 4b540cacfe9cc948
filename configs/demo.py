"""CPU demo: a tiny SDAR-shaped model warm-started on procedural arithmetic, then LightningRL (~15 min, 2 cores).

python -m lrl_jax.train --config configs/demo.py --workdir W   (add --config.algorithm=grpo or grpo_traj)
"""

from lrl_jax.defaults import base_config


def get_config():
  c = base_config()
  c.algorithm = "lightningrl"
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.model.tokenizer = "words"
  c.model.tiny.vocab_size = 160
  c.data.train = "demo"
  c.data.eval = "demo"
  c.data.demo_difficulty = 1
  c.data.demo_size = 2048
  c.data.eval_size = 128
  c.warm_start.steps = 250
  c.warm_start.max_mask_rate = 0.5  # a warm start that decodes accurately but slowly, like a base model
  c.warm_start.batch_size = 32
  c.warm_start.lr = 2e-3
  c.rollout.block_size = 8
  c.rollout.threshold = 0.9
  c.rollout.max_new_tokens = 24
  c.rollout.num_prompts = 16
  c.rollout.num_responses = 8
  c.rollout.batch_size = 128
  c.optim.lr = 2e-4
  c.optim.warmup_steps = 2
  c.train.steps = 60
  c.train.micro_batch_rows = 64
  c.train.eval_every = 20
  c.train.checkpoint_every = 5
  c.eval.thresholds = (0.9, 0.7, 0.5)
  c.eval.batch_size = 128
  c.logging.tensorboard = True
  return c
