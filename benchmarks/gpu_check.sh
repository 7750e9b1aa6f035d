#!/usr/bin/env bash
# The prepared GPU check (issue 18): run on a fresh H100/H200 machine, at most ~8 minutes.
#   1. versions and backends;  2. the Triton kernel and op tests on the GPU;
#   3. lrn bench --device cuda at the target shapes (bf16);  4. a launch-parameter sweep at
#   (64, 512, 1024) bf16;  5. registers/spills of every kernel compiled for sm_90.
# Results (JSON + Markdown) go to $OUT, else benchmarks/gpu/.  --dry-run runs every step on
# the CPU (Triton's interpreter, tiny shapes) to check the script itself.
# Runs from the source tree (PYTHONPATH): the machine has torch, triton and numba, and no index.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
OUT="${OUT:-benchmarks/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
PY="${PYTHON:-python3}"
step() { echo "== $(date -u +%H:%M:%S) $*"; }

step "1/5 versions"
"$PY" -m lrn info | tee "$OUT/info.txt"
if [[ $DRY == 1 ]]; then
  export TRITON_INTERPRET=1
  step "2/5 kernel tests (dry run: interpreter, a subset)"
  "$PY" -m pytest -q -x tests/ops/test_scan_parity.py -k "triton and bidir" 2>&1 | tail -3 | tee "$OUT/tests.txt"
  step "3/5 bench (dry run: cpu, one tiny shape)"
  "$PY" -m lrn bench --device cpu --shapes 2,8,16 --cells lstm,lrn --repeats 1 --warmup 0 --no-memory \
      --out "$OUT/gpu_targets.json" --markdown "$OUT/gpu_targets.md"
  step "4/5 sweep (dry run: interpreter, tiny shape)"
  "$PY" benchmarks/triton_sweep.py --device cpu --dtype float32 --shape 2,4,32 --repeats 1 --warmup 0 \
      --out "$OUT/gpu_sweep.json" > /dev/null
  unset TRITON_INTERPRET
  step "5/5 AOT compile for sm_90 (bf16 only in the dry run)"
  "$PY" -m lrn.ops.triton_aot --arch 90 --dtype bf16 --no-progress --json "$OUT/triton_aot_sm90.json" > "$OUT/triton_aot_sm90.md"
else
  step "2/5 kernel and op tests on the GPU"
  # a failing test is recorded, and the measurements still run: the window is too short to lose
  "$PY" -m pytest -q tests/ops/test_scan_parity.py tests/ops/test_triton_kernel.py tests/ops/test_ops.py 2>&1 | tail -15 | tee "$OUT/tests.txt" \
      || echo "kernel and op tests FAILED (above); measuring anyway" | tee -a "$OUT/tests.txt"
  step "3/5 lrn bench --device cuda --preset targets (bf16)"
  "$PY" -m lrn bench --device cuda --dtype bfloat16 --preset targets --repeats 20 \
      --out "$OUT/gpu_targets.json" --markdown "$OUT/gpu_targets.md"
  step "4/5 launch-parameter sweep at (64, 512, 1024) bf16"
  "$PY" benchmarks/triton_sweep.py --shape 64,512,1024 --dtype bfloat16 --out "$OUT/gpu_sweep.json"
  step "5/5 AOT compile for sm_90"
  "$PY" -m lrn.ops.triton_aot --arch 90 --no-progress --json "$OUT/triton_aot_sm90.json" > "$OUT/triton_aot_sm90.md"
fi
step "done: $(ls "$OUT" | tr '\n' ' ')"
