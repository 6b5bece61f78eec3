#!/usr/bin/env bash
# The fused CLRA block on a CUDA GPU, in one command (< 10 minutes):
#   1. tests/test_op_clra.py with compiled Triton kernels (TRITON_INTERPRET unset, so
#      tests/conftest.py leaves the interpreter off; the bf16/fp32 GPU tests run),
#   2. the harness on one CLRA block at B=8, 256², bf16, groups 1 and 43, forward and
#      forward+backward, ± recompute (clra, clra_g43, clra_recompute, clra_g43_recompute):
#      reference, torch.compile(reference), torch, triton and triton/dgrad (the Triton backward's
#      input gradients by the Triton kernel, timed beside triton's default aten ones: the
#      comparison that chooses CSAKD_CLRA_DGRAD),
#   3. the harness on the co-training step (teacher then student) of the quick CUDA suite
#      (128², B=8: the reference teacher's activations at 256², B=8 are ≈ 72 GiB), with and
#      without recompute (cotrain, cotrain_recompute),
# writing pytest.log, block/ and steps/ (bench.log, results.json, results.md) to OUTDIR.
#
# Usage: bash benchmarks/gpu_check_clra.sh [OUTDIR]      (default runs/gpu_check_clra)
# Environment: PYTHON (default .venv/bin/python if present, else python3), TEST_S (240),
# BLOCK_S (220), STEPS_S (110).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check_clra}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TEST_S=${TEST_S:-240}
BLOCK_S=${BLOCK_S:-220}
STEPS_S=${STEPS_S:-110}
mkdir -p "$OUT/block" "$OUT/steps"
unset TRITON_INTERPRET
start=$(date +%s)

"$PYTHON" - <<'PY' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check_clra.sh: no CUDA device visible to torch " + torch.__version__)
print(f"gpu_check_clra: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== 1/3 tests/test_op_clra.py on the GPU (limit ${TEST_S} s)"
timeout -k 10 "$TEST_S" "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_op_clra.py \
  2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}

# compile runs last within the harness: the deadline cuts them first
echo "== 2/3 harness: CLRA block B=8 256² bf16, groups 1 and 43 (limit ${BLOCK_S} s)"
timeout -k 10 "$BLOCK_S" "$PYTHON" -m benchmarks --device cuda --dtype bfloat16 --suite quick \
  --cases 'clra*' --res 256 --batch 8 --groups 1,43 --modes fwd,fwd+bwd --repeats 10 \
  --compile all --no-maxres --no-plots --deadline-s $(( BLOCK_S - 20 )) --out "$OUT/block" \
  2>&1 | tee "$OUT/block/bench.log"
block_rc=${PIPESTATUS[0]}

echo "== 3/3 harness: co-training step, ± recompute (limit ${STEPS_S} s)"
timeout -k 10 "$STEPS_S" "$PYTHON" -m benchmarks --device cuda --dtype bfloat16 --suite quick \
  --cases 'cotrain*' --repeats 5 --compile none --no-maxres --no-plots \
  --deadline-s $(( STEPS_S - 20 )) --out "$OUT/steps" 2>&1 | tee "$OUT/steps/bench.log"
steps_rc=${PIPESTATUS[0]}

echo "gpu_check_clra: tests rc=$test_rc, block rc=$block_rc, steps rc=$steps_rc, $(( $(date +%s) - start )) s"
[ "$test_rc" -eq 0 ] && [ "$block_rc" -eq 0 ] && [ "$steps_rc" -eq 0 ]
