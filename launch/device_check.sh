#!/usr/bin/env bash
# Every measurement that needs a GPU, in one call (at most ~8 minutes on one H100/H200), into one results file:
#   1. env            the accelerator JAX sees
#   2. parity         the model against transformers' Qwen3 (tests/model/test_parity.py), JAX on the device
#   3. kernels        the Pallas kernels against the XLA path (their test files), on the device
#   4. bench_rollout  python -m lrl_jax.bench rollout --preset=sdar-8b (per-forward ms against the HBM floor)
#   5. bench_stop     python -m lrl_jax.bench rollout --lengths=stop at SDAR-1.7B shape, block 4: the engine with the
#                     Triton paged kernel, the engine with the XLA page walk, and the dense static loop (ms per
#                     forward, tokens/s, tail share): does the GPU forward cost more than a dense one?
#   6. bench_train    python -m lrl_jax.bench train at SDAR-1.7B shape (tokens/s, MFU)
#
#   launch/device_check.sh [--tiny] [--out FILE]
#
# --tiny (or DEVICE_CHECK_TINY=1) runs the same checks on the CPU with tiny shapes and a subset of the tests, so the
# script itself is tested without a GPU (tests/plan/test_device_check.py). FILE (default $OUT/device_check.json, or
# ./device_check.json) gets {"tiny", "checks": [{name, command, status, rc, seconds, tail}]}; a summary table is
# printed last. Exit code 0 when every check passed, 1 otherwise (each check still runs).
#
# On a machine without a package index, put the wheels its image lacks in .wheels/ first (they are installed into
# /tmp/lrl_site), e.g. here: pip download --no-deps --only-binary=:all: --python-version 3.12 \
#   --platform manylinux2014_x86_64 -d .wheels ml_collections tensorboardX math-verify latex2sympy2_extended \
#   antlr4-python3-runtime==4.13.2
set -uo pipefail
cd "$(dirname "$0")/.."
TINY=${DEVICE_CHECK_TINY:-0}
RESULTS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --out) RESULTS=${2:?--out needs a file}; shift ;;
    --out=*) RESULTS=${1#--out=} ;;
    *) echo "error: $1: unknown argument (use --tiny, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
RESULTS=${RESULTS:-${OUT:-.}/device_check.json}
PY=${PYTHON:-python3}
if compgen -G ".wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/lrl_site .wheels/*.whl \
    || { echo "error: .wheels: installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/lrl_site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
KERNEL_TESTS=$(ls tests/kernels/test_*.py 2>/dev/null | tr '\n' ' ')
if [[ "$TINY" == 1 ]]; then
  export JAX_PLATFORMS=cpu
  SCALE=3  # time limits x3: a loaded CPU instead of a GPU
  PARITY_SELECT=(-k "test_causal_parity and untied")  # one test of each file: the suite runs the rest on CPU
  KERNEL_TESTS=tests/kernels/test_paged_triton.py
  KERNEL_SELECT=(-k "test_pallas_kernel_matches_xla_path")
  ROLLOUT=(--preset=cpu-small --requests=8 --batch=4 --prompt_len=16 --block_size=8 --max_new_tokens=32 --median=12
           --forwards_per_call=8 --engines=static,engine)
  STOP=(--preset=cpu-small --layers=1 --requests=8 --batch=4 --prompt_len=16 --block_size=4 --max_new_tokens=32
        --stop_tokens=200 --forwards_per_call=8)
  TRAIN=(--preset=cpu-small --rows=2 --seq=64 --steps=1 --dtype=float32 --no_torch)
else
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda,cpu}  # the conftest's CPU default must not win on the device
  SCALE=1
  PARITY_SELECT=()
  KERNEL_SELECT=()
  ROLLOUT=(--preset=sdar-8b)
  STOP=(--preset=sdar-1.7b --requests=128 --batch=32 --prompt_len=40 --block_size=4 --max_new_tokens=256
        --stop_tokens=3000)
  TRAIN=(--preset=sdar-1.7b --rows=8 --seq=2048 --steps=3 --dtype=bfloat16 --remat=full --no_torch)
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
NAMES=()
FAILED=0

check() {  # check NAME TIMEOUT_S COMMAND...: run it, keep its log and outcome
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  echo "== $name: $*"
  local start=$SECONDS rc
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  tail -n 5 "$WORK/$name.log"
  printf '%s\n' "$*" >"$WORK/$name.cmd"
  echo "$rc $((SECONDS - start)) $limit" >"$WORK/$name.rc"
  NAMES+=("$name")
  [[ $rc -eq 0 ]] || FAILED=1
}

check env 60 "$PY" -c "import jax; print(jax.default_backend(), jax.devices())"
check parity 90 "$PY" -m pytest -o addopts=-q -x -p no:cacheprovider tests/model/test_parity.py "${PARITY_SELECT[@]}"
if [[ -n "$KERNEL_TESTS" ]]; then
  # shellcheck disable=SC2086
  check kernels 90 "$PY" -m pytest -o addopts=-q -x -p no:cacheprovider $KERNEL_TESTS "${KERNEL_SELECT[@]}"
fi
check bench_rollout 150 "$PY" -m lrl_jax.bench rollout "${ROLLOUT[@]}"
check bench_stop 240 "$PY" -m lrl_jax.bench rollout --lengths=stop --engines=engine,engine_xla,dense "${STOP[@]}"
check bench_train 120 "$PY" -m lrl_jax.bench train "${TRAIN[@]}"

"$PY" - "$WORK" "$RESULTS" "$TINY" "${NAMES[@]}" <<'PYEOF'
import json, os, sys

work, results, tiny, names = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
checks = []
for name in names:
  rc, seconds, limit = (int(x) for x in open(os.path.join(work, f"{name}.rc")).read().split())
  log = open(os.path.join(work, f"{name}.log"), errors="replace").read().splitlines()
  status = "ok" if rc == 0 else "timeout" if rc == 124 else "failed"
  checks.append({"name": name, "command": open(os.path.join(work, f"{name}.cmd")).read().strip(), "status": status,
                 "rc": rc, "seconds": seconds, "limit_s": limit, "tail": log[-40:]})
tmp = f"{results}.tmp"
with open(tmp, "w") as f:
  json.dump({"tiny": tiny, "checks": checks}, f, indent=2)
os.replace(tmp, results)
print(f"\n{'check':<14} {'status':<8} {'seconds':>7}  last line")
for c in checks:
  last = next((line for line in reversed(c["tail"]) if line.strip()), "")
  print(f"{c['name']:<14} {c['status']:<8} {c['seconds']:>7}  {last[:100]}")
print(f"results: {results}")
PYEOF
exit $FAILED
