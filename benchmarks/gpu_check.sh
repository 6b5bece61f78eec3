#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (torch with CUDA and triton installed):
#   0. the native extension built in place where it is missing (setup.py build_ext --inplace),
#   1. the test suite on the GPU with compiled Triton kernels (TRITON_INTERPRET unset, so
#      tests/conftest.py leaves the interpreter off),
#   2. every registered backend against the reference on the GPU (python -m benchmarks.agree),
#   3. the full benchmark suite (python -m benchmarks --device cuda --suite full), cut by a
#      deadline so that the whole script stays under 8 minutes,
# writing pytest.log, agree.log, bench.log, results.json, results.md, time.png, memory.png to OUTDIR.
# Then: python -m benchmarks.results OUTDIR/results.json  (updates benchmarks/RESULTS.md).
#
# Usage: bash benchmarks/gpu_check.sh OUTDIR
# Environment: PYTHON (default .venv/bin/python if present, else python3), GPU_CHECK_BUDGET_S
# (total seconds, default 470), GPU_CHECK_TEST_S (seconds for the test suite, default 200).
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BUDGET=${GPU_CHECK_BUDGET_S:-470}
TEST_S=${GPU_CHECK_TEST_S:-200}
mkdir -p "$OUT"
start=$(date +%s)
unset TRITON_INTERPRET

"$PYTHON" - <<'EOF' || exit 2
import os, torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check.sh: no CUDA device is visible to torch " + torch.__version__)
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}")
EOF

# the native extension (cpp and cuda backends), built in place with its CUDA kernels where this
# checkout has none (a fresh machine: built files are not in the working tree); a failed build
# prints one warning and the Python backends run
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('csakd_fast._C') else 1)"; then
  echo "== 0/3 building csakd_fast._C in place (CUDA kernels included)"
  timeout -k 10 240 env CSAKD_BUILD_CUDA=1 "$PYTHON" setup.py -q build_ext --inplace 2>&1 \
    | tail -n 20 | tee "$OUT/build.log"
fi

echo "== 1/3 test suite on the GPU (limit ${TEST_S} s)"
timeout -k 10 "$TEST_S" "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/ 2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}

echo "== 2/3 backends against the reference on the GPU"
timeout -k 10 90 "$PYTHON" -m benchmarks.agree --device cuda 2>&1 | tee "$OUT/agree.log"
agree_rc=${PIPESTATUS[0]}

elapsed=$(( $(date +%s) - start ))
left=$(( BUDGET - elapsed - 30 ))  # 30 s for start-up, the report and the plots
echo "== 3/3 full benchmark suite (${left} s deadline)"
if [ "$left" -gt 60 ]; then
  timeout -k 10 $(( left + 25 )) "$PYTHON" -m benchmarks --device cuda --suite full --out "$OUT" \
    --deadline-s "$left" 2>&1 | tee "$OUT/bench.log"
  bench_rc=${PIPESTATUS[0]}
else
  echo "no time left for the benchmarks" | tee "$OUT/bench.log"; bench_rc=3
fi
# a run cut by the timeout leaves its incremental results.json: render what it has
if [ "$bench_rc" -ne 0 ] && [ -f "$OUT/results.json" ]; then
  "$PYTHON" -m benchmarks.report "$OUT/results.json"
fi
echo "gpu_check: tests rc=$test_rc, agree rc=$agree_rc, benchmarks rc=$bench_rc, total $(( $(date +%s) - start )) s"
[ "$test_rc" -eq 0 ] && [ "$agree_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
