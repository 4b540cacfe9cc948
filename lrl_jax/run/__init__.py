"""The training application above `rl/`: setup, the trainer (one RL step, its state on disk), rollouts, the loop, the
warm start, checkpoints and metrics (docs/DESIGN.md). Nothing is imported here: `lrl_jax.run.loop` is the entry."""
