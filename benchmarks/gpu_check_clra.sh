#!/usr/bin/env bash
# The fused CLRA block on a CUDA GPU, in one command (the shared harness may call it):
#   1. tests/test_clra_fused.py with compiled Triton kernels (TRITON_INTERPRET unset, so
#      tests/conftest.py leaves the interpreter off; the bf16/fp32 GPU tests run),
#   2. benchmarks/bench_clra.py at B=8, 256², bf16: reference, torch.compile(reference), torch,
#      triton, triton/dgrad (its backward's input gradients by the Triton kernel: compare with
#      triton to choose clra_triton.DGRAD), each ± recompute, forward and forward+backward,
#      groups 1 and 43; then the teacher
#      and student co-training step (default 128², B=8: the reference teacher's activations at
#      256², B=8 are ≈ 72 GiB, design.md §2; STEP_RES=256 to try it),
# writing pytest.log, bench.log and bench.json to OUTDIR.
#
# Usage: bash benchmarks/gpu_check_clra.sh [OUTDIR]      (default runs/gpu_check_clra)
# Environment: PYTHON (default .venv/bin/python if present, else python3), STEP_RES (128),
# TEST_S (240), BENCH_S (330).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check_clra}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"
unset TRITON_INTERPRET
start=$(date +%s)

"$PYTHON" - <<'PY' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check_clra.sh: no CUDA device visible to torch " + torch.__version__)
print(f"gpu_check_clra: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== 1/2 tests/test_clra_fused.py on the GPU"
timeout -k 10 "${TEST_S:-240}" "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_clra_fused.py \
  2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}

echo "== 2/2 benchmark: CLRA block B=8 256² bf16, then the training steps"
timeout -k 10 "${BENCH_S:-330}" "$PYTHON" benchmarks/bench_clra.py --device cuda --dtype bfloat16 \
  --res 256 --batch 8 --groups 1,43 --repeats 10 --steps --step-res "${STEP_RES:-128}" \
  --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_check_clra: tests rc=$test_rc, bench rc=$bench_rc, $(( $(date +%s) - start )) s"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
