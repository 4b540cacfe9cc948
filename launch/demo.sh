#!/usr/bin/env bash
# The CPU demo with its baselines: LightningRL, then GRPO and GRPO(traj) from the same warm start (reused, not
# retrained), then one comparison table with a shared y_max.   launch/demo.sh [WORKDIR]
set -euo pipefail
W=${1:-workdir/demo_compare}
python -m lrl_jax.train --config configs/demo.py --workdir "$W/lightningrl"
for algorithm in grpo grpo_traj; do
  mkdir -p "$W/$algorithm"
  [ -d "$W/$algorithm/warmstart" ] || cp -r "$W/lightningrl/warmstart" "$W/$algorithm/"
  python -m lrl_jax.train --config "configs/demo.py:$algorithm" --workdir "$W/$algorithm"
done
python -m lrl_jax.evaluation.compare "$W"/{lightningrl,grpo,grpo_traj}/summary.json
