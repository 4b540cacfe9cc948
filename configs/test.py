"""Smallest end-to-end run for tests: a 2-layer model, 2 RL steps, a few warm-start steps."""

from lrl_jax.defaults import base_config


def get_config():
  c = base_config()
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.model.tiny.update(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128)
  c.data.train = "demo"
  c.data.eval = "demo"
  c.data.demo_size = 64
  c.data.eval_size = 8
  c.warm_start.steps = 4
  c.warm_start.batch_size = 8
  c.rollout.block_size = 4
  c.rollout.max_new_tokens = 12
  c.rollout.num_prompts = 2
  c.rollout.num_responses = 4
  c.rollout.batch_size = 8
  c.rollout.threshold = 0.05
  c.rl.filter_all_wrong = False  # a barely trained model is always wrong and equally slow: keep every group
  c.rl.filter_tpf_threshold = 0.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 1
  c.train.steps = 2
  c.train.micro_batch_rows = 8
  c.train.checkpoint_every = 1
  c.eval.thresholds = (0.05,)
  c.eval.batch_size = 8
  c.logging.tensorboard = False
  c.train.progress = False
  return c
