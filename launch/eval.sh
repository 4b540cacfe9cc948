#!/usr/bin/env bash
# Evaluate SDAR-8B-b32 checkpoints as in the paper (Table 1): greedy, block 32, threshold sweep, 2048 new tokens,
# on GSM8K / MATH500 / MBPP / HumanEval. One GPU host; every variable below can be overridden from the environment:
#
#   CHECKPOINTS=ckpt/sdar8b,runs/lrl/hf_step200,runs/grpo/hf_step200 WORKDIR=out/eval launch/eval.sh
#
# Get the test sets first: for d in GSM8K MATH500 MBPP HumanEval; do python -m lrl_jax.data download --dataset $d --out data; done
#
# Multi-host is unnecessary here: the 8B model (16.4 GB in bf16) and its KV cache fit one accelerator, and decoding is
# memory-bound batch after batch, so extra hosts would only split the work. To use several GPUs of one host, run this
# script once per checkpoint with CUDA_VISIBLE_DEVICES=i and its own WORKDIR, and pass the same Y_MAX to every run so
# their AUPs stay comparable (without it each run's y_max is its own best accuracy).
set -euo pipefail

CHECKPOINTS=${CHECKPOINTS:?set CHECKPOINTS to comma-separated model dirs (HF or Orbax)}
WORKDIR=${WORKDIR:-out/eval}
DATA_DIR=${DATA_DIR:-data}
GSM8K=${GSM8K:-$DATA_DIR/GSM8K.json}
MATH500=${MATH500:-$DATA_DIR/MATH500.json}
MBPP=${MBPP:-$DATA_DIR/MBPP.json}
HUMANEVAL=${HUMANEVAL:-$DATA_DIR/HumanEval.json}
THRESHOLDS=${THRESHOLDS:-0.95,0.9,0.8,0.7,0.5}
BLOCK_SIZES=${BLOCK_SIZES:-32}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
BATCH_SIZE=${BATCH_SIZE:-64}  # TPS is reported with it; BATCH_SIZE=1 compares with the paper's batch-1 latency floor
Y_MAX=${Y_MAX:-}              # "" = best accuracy among CHECKPOINTS; e.g. gsm8k=90.3,math500=63.6,mbpp=58.3,humaneval=76
ATTN_IMPL=${ATTN_IMPL:-xla}   # xla | pallas

python -m lrl_jax.eval --config configs/eval.py --workdir "$WORKDIR" \
  --config.checkpoints="$CHECKPOINTS" \
  --config.datasets="$GSM8K,$MATH500,$MBPP,$HUMANEVAL" \
  --config.thresholds="$THRESHOLDS" \
  --config.block_sizes="$BLOCK_SIZES," \
  --config.strategy=low_confidence_dynamic \
  --config.max_new_tokens="$MAX_NEW_TOKENS" \
  --config.batch_size="$BATCH_SIZE" \
  --config.dtype=bfloat16 \
  --config.attn_impl="$ATTN_IMPL" \
  --config.y_max="$Y_MAX" \
  "$@"
