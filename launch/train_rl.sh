#!/usr/bin/env bash
# LightningRL on one GPU host (all local GPUs form the mesh), or on several hosts with --distributed.
#
#   launch/train_rl.sh CKPT_DIR WORKDIR [extra --config.x=y overrides]
#
# CKPT_DIR is an Orbax (python -m lrl_jax.convert --hf_dir=...) or HF SDAR checkpoint; the training data is
# data/MATH_train.json (python -m lrl_jax.data download --dataset MATH_train --out data). Rerunning the same
# command resumes from WORKDIR's newest checkpoint.
#
# Multi-host (e.g. 2 hosts x 8 GPUs): run the same command on every host with LRL_DISTRIBUTED=1, on a filesystem
# every host sees (WORKDIR is shared: process 0 writes metrics, summary.json and final/, all write checkpoints).
#   Explicit start (any cluster): name process 0's address, the process count and this host's index:
#     LRL_DISTRIBUTED=1 LRL_COORDINATOR_ADDRESS=host0:1234 LRL_NUM_PROCESSES=2 LRL_PROCESS_ID=<0|1> \
#       launch/train_rl.sh CKPT_DIR WORKDIR
#   Auto-detected start (SLURM, Open MPI, TPU pods): leave the three LRL_* variables unset; jax reads them from the
#   scheduler (srun/mpirun: one process per host).
# The mesh spans all hosts: --config.mesh.fsdp=8 --config.mesh.data=-1 shards parameters within a host and data
# across hosts (a tensor-parallel group must stay within one host). Rollouts run on each host's own devices, on its
# share of the prompt groups. If a host dies, the others stop within about a minute with one `error:` line; rerun
# the command on every host to resume from the last checkpoint. See docs/SCALING.md.
# SDAR-30B-A3B (MoE) on one 8xH200 host: CONFIG=configs/lightningrl_30b.py launch/train_rl.sh ckpt/sdar30b_a3b W
# (expert 2 x tensor 4; on 2 x 8 H100s add --config.mesh.fsdp=2 --config.train.micro_batch_rows=4; docs/MOE.md).
set -euo pipefail
CKPT=${1:?usage: launch/train_rl.sh CKPT_DIR WORKDIR [overrides]}
WORKDIR=${2:?usage: launch/train_rl.sh CKPT_DIR WORKDIR [overrides]}
shift 2
CONFIG=${CONFIG:-configs/lightningrl.py}
DIST=()
if [[ "${LRL_DISTRIBUTED:-0}" == "1" ]]; then
  DIST=(--distributed)  # python reads LRL_COORDINATOR_ADDRESS / LRL_NUM_PROCESSES / LRL_PROCESS_ID when set
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python -m lrl_jax.train --config "$CONFIG" --workdir "$WORKDIR" "${DIST[@]}" \
  --config.model.checkpoint="$CKPT" "$@"
