"""CPU demo: a tiny SDAR-shaped model warm-started on procedural arithmetic chains, then RL (README: timings).

python -m lrl_jax.train --config configs/demo.py --workdir W              (LightningRL)
python -m lrl_jax.train --config configs/demo.py:grpo --workdir W2        (or :grpo_traj, the baselines)
"""

from lrl_jax.defaults import base_config


def get_config(algorithm: str = "lightningrl"):
  c = base_config()
  c.algorithm = algorithm
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.model.tokenizer = "words"
  c.model.tiny.vocab_size = 160
  c.data.train = "demo"
  c.data.eval = "demo"
  c.data.demo_difficulty = 5  # CHAIN: running totals written out, the answer boxed in one of two forms (README)
  c.data.demo_size = 2048
  c.data.eval_size = 256
  c.warm_start.steps = 600
  c.warm_start.batch_size = 32
  c.warm_start.lr = 2e-3
  c.rollout.block_size = 16
  # rollouts at θ 0.6, inside the warm start's accuracy cliff (θ 0.7 -> 0.5): parallel fills of the box that mix
  # its two forms are sampled and judged wrong, consistent ones are rewarded (docs/RESULTS.md, "RL pilots")
  c.rollout.threshold = 0.6
  c.rollout.max_new_tokens = 48  # responses are two blocks; 32 would count 27-token ones as truncated (margin 5)
  c.rollout.num_prompts = 8
  c.rollout.num_responses = 8
  c.rollout.batch_size = 64
  c.optim.lr = 1e-4
  if algorithm == "lightningrl":  # the baselines keep their own settings (no NLL, no speed reward)
    c.loss.nll_loss_weight = 1.0  # a tiny model samples many wrong answers: anchor harder to the correct ones
    c.rl.logp_mode = "trajectory"  # block_masked would train only each block's fully masked state
    c.rl.speed_reward_correct_only = True  # extension: otherwise fast wrong guesses are rewarded (README)
  c.optim.warmup_steps = 2
  c.train.steps = 40
  c.train.micro_batch_rows = 32
  c.train.recompute_old_logp = False  # one update per step: logp_old is the policy's own, no extra forward
  c.train.eval_every = 40
  c.train.checkpoint_every = 5
  c.eval.thresholds = (0.9, 0.95, 0.8, 0.7, 0.5, 0.3)  # the first is the headline; summary.json keeps every point
  c.eval.batch_size = 256
  c.logging.tensorboard = True
  return c
