#!/usr/bin/env bash
# The fused CSA on a CUDA GPU, in one command (< 8 minutes on an H100):
#   1. tests/test_op_csa.py with the real compiled Triton kernels (TRITON_INTERPRET unset, so
#      tests/conftest.py leaves the interpreter off), float16/bfloat16 included;
#   2. the harness at the GPU target: bf16, C = 86, B = 8, 256², forward and forward+backward,
#      every backend (reference, torch, triton, cuda) and torch.compile(reference) side by side,
#      20 timed iterations each, with the floor against the bandwidth and matmul ceilings
#      measured in the same run,
# writing pytest.log, bench.log, results.json and results.md to OUTDIR.
#
# Usage: bash benchmarks/gpu_check_csa.sh [OUTDIR]      (default runs/gpu_check_csa)
# Environment: PYTHON (default .venv/bin/python if present, else python3), TEST_S (270),
# BENCH_S (190).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check_csa}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TEST_S=${TEST_S:-270}
BENCH_S=${BENCH_S:-190}
mkdir -p "$OUT"
unset TRITON_INTERPRET
start=$(date +%s)

"$PYTHON" - <<'PY' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check_csa.sh: no CUDA device visible to torch " + torch.__version__)
import triton
print(f"gpu_check_csa: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"triton {triton.__version__}, CUDA {torch.version.cuda}")
PY

echo "== 1/2 tests/test_op_csa.py on the GPU (limit ${TEST_S} s)"
timeout -k 10 "$TEST_S" "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_op_csa.py \
  2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}

# compile runs last within the harness: the deadline cuts them first
echo "== 2/2 harness: csa bf16 C=86 B=8 256², fwd and fwd+bwd (limit ${BENCH_S} s)"
timeout -k 10 "$BENCH_S" "$PYTHON" -m benchmarks --device cuda --dtype bfloat16 --suite quick \
  --cases csa --res 256 --batch 8 --modes fwd,fwd+bwd --repeats 20 --compile all --no-maxres \
  --no-plots --deadline-s $(( BENCH_S - 20 )) --out "$OUT" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_check_csa: tests rc=$test_rc, bench rc=$bench_rc, $(( $(date +%s) - start )) s"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
