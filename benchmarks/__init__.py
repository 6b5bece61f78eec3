"""The benchmark harness of csakd_fast: every backend of every fused op side by side.

``python -m benchmarks --device cpu --suite quick --out DIR`` times the CSA module, one CLRA block,
the teacher and student forward and the co-training step for every backend registered at run
time (``csakd_fast.backends.available``) plus ``compile`` (``torch.compile`` of the reference), and
writes ``DIR/results.json`` (one record per case), ``DIR/results.md`` and PNG plots.
``python -m benchmarks.results DIR/results.json`` (re)writes ``benchmarks/RESULTS.md`` from a run;
``python -m benchmarks.compare OLD.json NEW.json`` sets two runs side by side. It is the one
timing path: the GPU scripts (``gpu_check*.sh``) call it too.

Modules: ``env`` (machine description), ``timing`` (medians and spreads), ``memory`` (bytes saved
for backward by ``csakd_fast.memory.SavedBytes``, peak RSS, CUDA peak), ``floors`` (the ceilings
measured in the run and the achieved fraction; docs/design.md, "Measuring"), ``cases`` (the
case and instance machinery, the suites, the command line's options), ``ops`` (one module of
cases per fused op, with its floor: ``ops/csa.py``, ``ops/clra.py``; docs/design.md, "The fused
CSA" and "The fused CLRA"), ``models`` (the teacher, student and co-training cases), ``run``
(the command line), ``report`` (markdown, plots), ``results`` (RESULTS.md), ``compare`` (two
runs), ``maxres`` (largest trainable resolution on a GPU), ``agree`` (every backend against the
reference on one device, for gpu_check.sh).
"""

SCHEMA = 1
PRODUCER = "csakd_fast-benchmarks"
