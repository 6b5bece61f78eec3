#!/usr/bin/env bash
# Fused CSA on a CUDA machine, one command (< 8 minutes on an H100):
#   1. tests/test_csa_fused.py with the real compiled Triton kernels (TRITON_INTERPRET=0),
#      float16/bfloat16 included (test_half_precision_cuda);
#   2. the benchmark at the issue's GPU target: bf16, C = 86, B = 8, 256², forward and
#      forward+backward, reference vs torch.compile(reference) vs torch vs triton, with the
#      bandwidth floor; records in runs/gpu_check_csa/results_csa_gpu.json.
# Usage: benchmarks/gpu_check_csa.sh [python]   (default: python, or $PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python}}
export TRITON_INTERPRET=0
"$PY" - <<'PYEOF'
import torch, triton
assert torch.cuda.is_available(), "gpu_check_csa.sh needs a CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__)
PYEOF
echo "== tests (compiled kernels) =="
mkdir -p runs/gpu_check_csa
timeout 270 "$PY" -m pytest -q -p no:cacheprovider tests/test_csa_fused.py
echo "== benchmark: bf16, C=86, B=8, 256^2 =="
timeout 190 "$PY" benchmarks/bench_csa.py --device cuda --dtype bfloat16 --batch 8 --res 256 \
    --repeats 20 --warmup 3 --rotate 3 --json runs/gpu_check_csa/results_csa_gpu.json
