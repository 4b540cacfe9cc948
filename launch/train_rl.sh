#!/usr/bin/env bash
# LightningRL on one GPU host (all local GPUs form the mesh), or on several hosts with --distributed.
#
#   launch/train_rl.sh CKPT_DIR WORKDIR [extra --config.x=y overrides]
#
# CKPT_DIR is an Orbax (python -m lrl_jax.convert --hf_dir=...) or HF SDAR checkpoint; the training data is
# data/MATH_train.json (python -m lrl_jax.data download --dataset MATH_train --out data). Rerunning the same
# command resumes from WORKDIR's newest checkpoint.
#
# Multi-host (e.g. 2 hosts × 8 GPUs): run the same command on every host with
#   LRL_DISTRIBUTED=1 and JAX's coordinator variables set, e.g.
#   JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<0|1> LRL_DISTRIBUTED=1 launch/train_rl.sh ...
# (on SLURM/TPU pods jax.distributed.initialize() discovers these itself). The mesh then spans all hosts:
#   --config.mesh.fsdp=8 --config.mesh.data=-1 shards parameters within a host and data across hosts.
set -euo pipefail
CKPT=${1:?usage: launch/train_rl.sh CKPT_DIR WORKDIR [overrides]}
WORKDIR=${2:?usage: launch/train_rl.sh CKPT_DIR WORKDIR [overrides]}
shift 2
CONFIG=${CONFIG:-configs/lightningrl.py}
DIST=()
if [[ "${LRL_DISTRIBUTED:-0}" == "1" ]]; then
  DIST=(--distributed)
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python -m lrl_jax.train --config "$CONFIG" --workdir "$WORKDIR" "${DIST[@]}" \
  --config.model.checkpoint="$CKPT" "$@"
