# Quick start: `make demo` (the main job) and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this project's machines torch==2.13.0 is a local CPU build; a bare `torch` pulls a CUDA
# build of several GB. An already-installed torch (in the venv, or in $(PYTHON)'s site-packages)
# is kept.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

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
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

test: venv
	$(PY) -m pytest -q

# The main job: co-train the demo teacher and student on the embedded reference scenes, evaluate
# them on the held-out test region against the bicubic baseline, print the table, write the report
# (DEMO_OUT/report/report.md). A previous demo run in DEMO_OUT is replaced.
DEMO_OUT ?= demo_out
DEMO_ARGS ?=
demo: venv
	rm -rf $(DEMO_OUT)
	$(PY) -m csakd_fast train --config demo --out $(DEMO_OUT) $(DEMO_ARGS)

# Quick CPU benchmark suite (≤ 5 min on 2 cores): every registered backend side by side; writes
# runs/bench/cpu-quick-<time>/ (JSON, markdown, plots) and updates benchmarks/RESULTS.md.
BENCH_ARGS ?= --device cpu --suite quick --write-results
bench: venv
	@$(PY) -c "import matplotlib, pytest_benchmark" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO_OUT)
