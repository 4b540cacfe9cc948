"""The paper's comparison and ablations on the CPU demo: every variant × seed from each seed's shared warm start.

python -m lrl_jax.experiments --config configs/compare.py --workdir W [--config.workers=2]
python -m lrl_jax.experiments --config configs/compare.py:test --workdir W   (2 variants × 2 seeds, seconds)

Each variant is (name, train config spec, overrides); a run is exactly
`python -m lrl_jax.train --config SPEC --workdir W/runs/NAME/seedS --config.seed=S --config.KEY=VALUE ...`.
"""

import ml_collections

DEMO = "configs/demo.py"
# LightningRL with the SPEC's shaping and loss (§7.3-7.4) at the demo's scale (lr, batch, steps, block, θ).
SPEC_SHAPING = "rl.logp_mode=block_masked rl.speed_reward_correct_only=False"
SPEC = f"{SPEC_SHAPING} loss.nll_loss_weight=0.1"

VARIANTS = (
    ("lightningrl_spec", DEMO, SPEC),
    ("lightningrl_ext", DEMO, ""),  # the README demo: SPEC + the project's extensions (configs/demo.py)
    ("grpo", f"{DEMO}:grpo", ""),
    ("grpo_traj", f"{DEMO}:grpo_traj", ""),
    # The paper's ablations remove one piece of its method, so they start from the SPEC's LightningRL.
    ("no_nll", DEMO, f"{SPEC_SHAPING} loss.nll_loss_weight=0.0"),
    ("joint_norm", DEMO, f"{SPEC} rl.reward_norm=joint"),
    ("no_tpf_filter", DEMO, f"{SPEC} rl.filter_tpf_threshold=0.0"),
    ("resample", DEMO, f"{SPEC} rl.resample_filtered=True"),
    # The authors' optimizer: a fresh AdamW every RL step, its warmup from rate 0 over 10 updates; 8 updates per
    # step of 8 kept responses each (at most), so a full step's updates run at 0, 0.1, ..., 0.7 x lr.
    ("optimizer_reset", DEMO, f"{SPEC} optim.reset_per_step=True optim.warmup_steps=10 train.sequences_per_update=8"),
)

# The paper's claims as paired differences, row a minus row b per seed (issue 24 item 3); "start" is the warm start.
PAIRED = (
    ("lightningrl_ext", "start", "the demo's RL vs its warm start"),
    ("lightningrl_spec", "start", "SPEC LightningRL vs its warm start"),
    ("lightningrl_spec", "grpo", "(a) TPF gain over GRPO"),
    ("lightningrl_spec", "grpo_traj", "(a) TPF gain over GRPO(traj)"),
    ("lightningrl_ext", "grpo", "(a) the demo's TPF gain over GRPO"),
    ("lightningrl_ext", "grpo_traj", "(a) the demo's TPF gain over GRPO(traj)"),
    ("lightningrl_spec", "no_nll", "(b) what the NLL term keeps"),
    ("lightningrl_spec", "joint_norm", "(c) decoupled vs joint normalisation"),
    ("lightningrl_spec", "no_tpf_filter", "(d) what the TPF filter adds"),
    ("lightningrl_spec", "resample", "refill filtered groups vs not"),
    ("optimizer_reset", "lightningrl_spec", "the authors' per-step AdamW reset vs persistent AdamW"),
)


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.variants = VARIANTS
  c.paired = PAIRED  # claims whose rows both ran on >= 2 shared seeds are reported, the rest left out
  c.seeds = (0, 1, 2, 3, 4)
  c.workers = 0  # runs at a time (0: one per core of `cores`); each is pinned to its own core(s)
  c.cores = ""  # comma-separated core ids ("" = every core this process may use)
  c.only = ""  # comma-separated variant names to run ("" = all)
  c.compile_cache = True  # share JAX's persistent compilation cache (W/jax_cache) between the runs
  c.common = ""  # overrides for every run and warm start, e.g. "train.steps=40" for a shorter design pass
  if arg == "test":
    c.variants = (("lightningrl", "configs/test.py", ""),
                  ("grpo", "configs/test.py", "algorithm=grpo"))
    c.paired = (("lightningrl", "grpo", "LightningRL vs GRPO"),)
    c.seeds = (0, 1)
  elif arg:
    raise ValueError(f"configs/compare.py takes '' or 'test', not {arg!r}")
  c.lock()
  return c
