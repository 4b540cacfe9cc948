#!/usr/bin/env bash
# The CPU demo's comparison (docs/RESULTS.md): LightningRL as the SPEC defines it and with the project's extensions,
# GRPO, GRPO(traj), the paper's three ablations and the resampling refill, 3 seeds each from per-seed shared warm
# starts, two runs at a time each pinned to one core; then one table (mean ± std over seeds, one y_max) and plots.
# Rerunning the same command resumes.   launch/demo.sh [WORKDIR] [--config.x=y ...]
set -euo pipefail
W=${1:-workdir/compare}
shift || true
python -m lrl_jax.experiments --config configs/compare.py --workdir "$W" "$@"
