"""Deviceless ahead-of-time compiles of one RL step's programs for GPU/TPU targets: will a run fit, how fast.

`python -m lrl_jax.plan --config configs/lightningrl.py --preset=sdar-8b --target=h100x8` (docs/PLAN.md).
Modules: targets (devices by name), inputs (the checks before any compile), programs (what a step runs), rollout
(the engine's programs), memory (compile and per-device report), timeline (the step's phases), search (largest
fitting setting), flops (HLO FLOP count), jobs (the parent's side of the compiling child, `worker`), command (the
command behind `__main__`).
"""
