#!/bin/bash
# Builds the standalone GPU harness with nvcc and runs it: first small cases
# under compute-sanitizer (memcheck, racecheck), then the full checks and
# timings. Usage: custom_ops/gpu_harness/run.sh [OUT_DIR]  (default: a new temp dir)
# Needs nvcc and a GPU; no TensorFlow.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT_DIR=${1:-$(mktemp -d)}
echo "results in $OUT_DIR"
ARCH=${ARCH:-sm_90}
mkdir -p "$OUT_DIR"
BIN=$(mktemp -d)/alias_harness
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu,memory.used --format=csv
  nvcc --version | tail -2
  lscpu | grep -E "Model name|^CPU\(s\)"
} > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt"
set -e
# The TF-side CUDA file must compile with this toolchain too (no TF needed).
nvcc -O3 -std=c++17 -x cu -DGOOGLE_CUDA=1 --expt-relaxed-constexpr -Xcompiler -fPIC \
  -fmad=false -arch="$ARCH" -I "$HERE/../cc" -c "$HERE/../cc/kernels/alias_kernels.cu.cc" \
  -o "$(dirname "$BIN")/alias_kernels.cu.o"
nvcc -O3 -std=c++17 -arch="$ARCH" -fmad=false -Xptxas -v -I "$HERE/../cc" \
  -o "$BIN" "$HERE/alias_harness.cu" 2> "$OUT_DIR/ptxas.txt"
grep -E "registers|stack frame" "$OUT_DIR/ptxas.txt" | grep -v " 0 bytes stack frame" | sort | uniq -c | head -5 || true
set +e
status=0
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$BIN" --quick > "$OUT_DIR/sanitizer_$tool.txt" 2>&1
    rc=$?
    echo "compute-sanitizer $tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT_DIR/sanitizer_$tool.txt" | tail -1)"
    [ $rc -ne 0 ] && status=1
  done
fi
HARNESS_REPORT="$OUT_DIR/gpu_results.md" "$BIN"
rc=$?
[ $rc -ne 0 ] && status=1
exit $status
