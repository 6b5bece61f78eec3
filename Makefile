# Quick start: `make demo` (the main job) and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this project's machines torch==2.13.0 is a local CPU build; a bare `torch` pulls a CUDA
# build of several GB. An already-installed torch (in the venv, or in $(PYTHON)'s site-packages)
# is kept.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# the native extension csakd_fast._C (csrc/ and csrc/<op>/: C++; kernels/<op>/: CUDA): rebuilt in
# place when a source or header changes, at any depth
NATIVE := $(VENV)/.native
NATIVE_SRC := $(shell find csrc kernels -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \
                -o -name '*.cuh' \) 2>/dev/null) setup.py tools/cuda_toolkit.py

.PHONY: venv native native-check test reports report-ptxas report-triton demo bench clean

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "csakd_fast: keeping the torch of $(PYTHON) (venv with system site-packages)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "csakd_fast: keeping torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else $(PY) -m pip install -q "$(TORCH)"; fi
	@$(PY) -c "import triton" 2>/dev/null || $(PY) -m pip install -q triton \
	  || echo "csakd_fast: no Triton wheel for this platform: the Triton tests will be skipped"
	$(PY) -m pip install -q pybind11
	$(PY) -m pip install -q -e ".[test,export]"
	@touch $@ $(NATIVE)

# ninja (when present) recompiles only what changed; a failed build warns and leaves the
# Python backends (the test suite then fails where a compiler is present: CSAKD_REQUIRE_NATIVE)
native: $(NATIVE)
$(NATIVE): $(STAMP) $(NATIVE_SRC)
	$(PY) setup.py -q build_ext --inplace
	@touch $@

# kernels/ compiled for sm_90 (compile only; fails on an error or on any stack frame or spill; writes
# no tracked file: ptxas's log goes to build/ptxas/), then the CMake build (the module, the CUDA
# objects for sm_80;sm_90 where nvcc is) and its native test of the CPU passes (ctest)
CMAKE_DIR ?= build/cmake
native-check: venv
	$(PY) tools/ptxas_report.py --if-nvcc --check --log build/ptxas/ptxas.log
	@if command -v cmake >/dev/null; then \
	  cmake -S . -B $(CMAKE_DIR) --log-level=WARNING -DPython_EXECUTABLE=$(abspath $(PY)) && \
	  cmake --build $(CMAKE_DIR) -j $$(nproc) && \
	  ctest --test-dir $(CMAKE_DIR) --output-on-failure; \
	else echo "csakd_fast: no cmake here: the CMake build and its native test are skipped"; fi

test: venv $(NATIVE) native-check
	CSAKD_REQUIRE_NATIVE=$$(command -v $${CXX:-c++} >/dev/null && echo 1 || echo 0) $(PY) -m pytest -q

# The tracked compile reports, rewritten (commit them with the kernel or compiler change that moves
# them; no timestamps, so an unchanged compiler rewrites the same bytes):
#   kernels/PTXAS_REPORT.md   ptxas on kernels/ for sm_90 (needs nvcc)
#   kernels/TRITON_REPORT.md  Triton's ptxas on the CLRA kernel for sm_90, every variant (needs
#                             triton; no GPU: it compiles ahead of time, TRITON_INTERPRET unset)
# Each fails where a kernel spills or uses a stack frame (and where the Triton dot is no wgmma).
reports: report-ptxas report-triton
report-ptxas: venv
	$(PY) tools/ptxas_report.py
report-triton: venv
	env -u TRITON_INTERPRET $(PY) tools/triton_report.py

# The main job: co-train the demo teacher and student on the embedded reference scenes, evaluate
# them on the held-out test region against the bicubic baseline, print the table, write the report
# (DEMO_OUT/report/report.md). A previous demo run in DEMO_OUT is replaced.
DEMO_OUT ?= demo_out
DEMO_ARGS ?=
demo: venv $(NATIVE)
	rm -rf $(DEMO_OUT)
	$(PY) -m csakd_fast train --config demo --out $(DEMO_OUT) $(DEMO_ARGS)

# Quick CPU benchmark suite (≤ 5 min on 2 cores): every registered backend side by side; writes
# runs/bench/cpu-quick-<time>/ (JSON, markdown, plots) and updates benchmarks/RESULTS.md.
BENCH_ARGS ?= --device cpu --suite quick --write-results
bench: venv $(NATIVE)
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info csakd_fast/_C*.so $(DEMO_OUT)
