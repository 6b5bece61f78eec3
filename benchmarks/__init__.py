"""The benchmark harness of csakd_fast: every backend of every fused op side by side.

``python -m benchmarks --device cpu --suite quick --out DIR`` times the CSA module, one CLRA block,
the teacher and student forward and the co-training step for every backend registered at run
time (``csakd_fast.backends.available``) plus ``compile`` (``torch.compile`` of the reference), and
writes ``DIR/results.json`` (one record per case), ``DIR/results.md`` and PNG plots.
``python -m benchmarks.results DIR/results.json`` (re)writes ``benchmarks/RESULTS.md`` from a run.

Modules: ``env`` (machine description), ``timing`` (medians and spreads), ``memory`` (bytes saved
for backward, peak RSS, CUDA peak), ``floors`` (measured ceilings and the fused ops' floors,
design.md §3/§4), ``cases`` (the cases, the suites and the plug-in interface of
``benchmarks/bench_<op>.py``), ``run`` (the command line), ``report`` (markdown, plots),
``results`` (RESULTS.md), ``maxres`` (largest trainable resolution on a GPU), ``agree`` (every
backend against the reference on one device, for gpu_check.sh); ``test_bench_ops.py`` is the
pytest-benchmark suite (``pytest benchmarks/ --benchmark-only``).
"""

SCHEMA = 1
PRODUCER = "csakd_fast-benchmarks"
