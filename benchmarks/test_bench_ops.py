"""CPU regression benchmarks with pytest-benchmark (not part of ``make test``):

    pytest benchmarks/ --benchmark-only                       # all, about a minute on 2 cores
    pytest benchmarks/ --benchmark-only --benchmark-autosave  # keep a baseline in .benchmarks/
    pytest benchmarks/ --benchmark-only --benchmark-compare   # compare with the last baseline

Every backend registered for the CPU (Triton, interpreted there, left out) on the harness's own
cases (benchmarks/cases.py) at small sizes, inputs rotated over three random sets; each test's
``extra_info`` holds the bytes saved for backward. The numbers worth publishing come from
``python -m benchmarks``; these catch regressions between commits on one machine.
"""
import itertools

import pytest
import torch

from csakd_fast import backends

from .cases import WIDTHS, Probe, clra_cases, csa_cases, forward_cases

pytest.importorskip("pytest_benchmark")

CPU = torch.device("cpu")
W = WIDTHS["paper"]


def _names(*ops):
    names = None
    for op in ops:
        have = backends.available(op, CPU)
        names = [b for b in (names if names is not None else have) if b in have]
    return [b for b in names if b != "triton"]


def _bench(benchmark, case, backend):
    inst = case.build(backend, lambda m: m, CPU, torch.float32)
    sets = [inst.make_inputs(1000 + i) for i in range(3)]
    counters = {}
    inst.prepare(sets[0])
    inst.step(sets[0], Probe(None, counters, inst.exclude(sets[0])))  # warm-up, counts saved bytes
    benchmark.extra_info.update(case=case.name, mode=case.mode, res=case.res, batch=case.batch,
                                backend=backend, threads=torch.get_num_threads(),
                                saved_bytes_activations=max((c.activations for c in counters.values()),
                                                            default=None))
    rotation = itertools.cycle(sets)

    def setup():
        x = next(rotation)
        inst.prepare(x)
        return (x, Probe()), {}

    benchmark.pedantic(inst.step, setup=setup, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", _names("csa"))
def test_csa(benchmark, backend, mode):
    _bench(benchmark, csa_cases(W, [(64, 1)], [mode])[0], backend)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", _names("clra"))
def test_clra(benchmark, backend, mode):
    _bench(benchmark, [c for c in clra_cases(W, [(32, 1)], [mode])][0], backend)


@pytest.mark.parametrize("backend", _names("csa", "clra"))
def test_student_forward(benchmark, backend):
    _bench(benchmark, forward_cases(W, [(32, 1)], "student")[0], backend)
