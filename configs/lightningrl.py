"""LightningRL on SDAR-8B-Chat-b32, the paper's settings (SPEC §7): 128 prompts × 32 responses, θ 0.9, B 32.

Needs an Orbax or HF checkpoint and a math training set, e.g.
  python -m lrl_jax.convert --hf_dir=SDAR-8B-Chat-b32 --out_dir=ckpt/sdar8b --dtype=bfloat16
  python -m lrl_jax.data download --dataset MATH_train --out data
  python -m lrl_jax.train --config configs/lightningrl.py --workdir W --config.model.checkpoint=ckpt/sdar8b
"""

from lrl_jax.defaults import base_config


def get_config():
  c = base_config()
  c.algorithm = "lightningrl"
  c.model.checkpoint = "ckpt/sdar8b"
  c.model.dtype = "bfloat16"
  c.model.remat = "full"  # `dots` keeps every projection output and cannot fit 9216-position rows (PERFORMANCE.md)
  c.model.q_chunk = 1024
  c.data.train = "data/MATH_train.json"
  c.data.eval = "data/MATH500.json"
  c.data.eval_size = 500
  c.rollout.num_prompts = 128
  c.rollout.num_responses = 32
  c.rollout.block_size = 32
  c.rollout.threshold = 0.9
  c.rollout.temperature = 1.0
  c.rollout.max_new_tokens = 8192
  c.rollout.batch_size = 256
  c.train.micro_batch_rows = 48  # 6 per device on 8 GPUs: the most `plan` finds fits 80 GB at 256 + 8192 tokens
  c.train.sequences_per_update = 512  # the paper's update: 11 micro-batches of 48 (the last one partly filled)
  c.train.steps = 200
  c.train.eval_every = 10
  c.train.checkpoint_every = 5
  c.train.keep_last = 3
  c.train.keep_every = 50
  c.train.export_hf_every = 50
  c.eval.thresholds = (0.95, 0.9, 0.8, 0.7, 0.5)
  c.mesh.data = -1
  c.mesh.fsdp = 8
  return c
