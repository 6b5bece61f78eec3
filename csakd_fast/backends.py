"""Backend dispatch: one table per fused op, one resolver for every layer.

A backend is a name (``BACKENDS``); an op (``"csa"``, ``"clra"``) has an implementation per
backend, registered with :func:`register`. ``"auto"`` picks, for the device of the tensors, the
first backend of ``AUTO_ORDER`` that is available and implements the op; the environment variable
``CSAKD_BACKEND`` replaces ``"auto"`` by a fixed name. Adding a backend is a new file that calls
:func:`register` and, where it needs hardware or a build, an entry in ``_availability``.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Mapping
from typing import Callable, Dict

import torch

from . import _checks

BACKENDS = ("reference", "torch", "triton", "cpp", "cuda")
CHOICES = BACKENDS + ("auto",)
OPS = ("csa", "clra")   # the fused ops, each chosen on its own (per_op)

# Fastest first, by device type. The order follows the benchmark harness (benchmarks/RESULTS.md).
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "torch", "reference"),
    "cpu": ("cpp", "torch", "reference"),
}

_IMPLS: Dict[str, Dict[str, Callable]] = {}
# Provider modules live in csakd_fast/ops and are named ``<backend>.py`` or ``<op>_<backend>.py``;
# they are imported on first use, each on its own, so that a missing Triton or native build only
# removes the ops that module provides and never breaks ``import csakd_fast``.
_failures: Dict[str, list] = {}


def register(op: str, backend: str):
    """Decorator: ``fn`` implements ``op`` for ``backend``."""
    _checks.choice("backend", backend, BACKENDS)

    def deco(fn):
        _IMPLS.setdefault(op, {})[backend] = fn
        return fn

    return deco


def _provider_modules(backend: str) -> list:
    from . import ops

    return sorted(f"{ops.__name__}.{m.name}" for m in pkgutil.iter_modules(ops.__path__)
                  if m.name == backend or m.name.endswith("_" + backend))


def _load(backend: str) -> None:
    if backend in _failures:
        return
    _failures[backend] = []
    for mod in _provider_modules(backend):
        try:
            importlib.import_module(mod)
        except Exception as e:  # ImportError, or a broken optional build
            _failures[backend].append(f"{mod} failed to import ({type(e).__name__}: {e})")


def _availability(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run on ``device``, else the reason it cannot."""
    _load(backend)
    if backend == "triton":
        interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
        if device.type != "cuda" and not interp:
            return f"Triton needs a CUDA device (or TRITON_INTERPRET=1 on the CPU), got {device}"
    if backend == "cuda" and device.type != "cuda":
        return f"the CUDA extension needs a CUDA device, got {device}"
    if backend == "cuda" and not torch.cuda.is_available():
        return "the CUDA extension needs a CUDA GPU, and none is available"
    if backend == "cpp" and device.type != "cpu":
        return f"the C++ extension runs on the CPU, got {device}"
    return None


# torch.compile evaluates the choice once, at trace time, instead of tracing the provider imports
# (pkgutil's file-system walk cannot be traced: fullgraph=True would fail on a first call)
@torch.compiler.assume_constant_result
def resolve(op: str, backend: str, device: torch.device) -> str:
    """The concrete backend that will run ``op`` on ``device`` for the requested ``backend``."""
    _checks.choice("backend", backend, CHOICES)
    if backend == "auto":
        env = os.environ.get("CSAKD_BACKEND")
        if env:
            _checks.choice("CSAKD_BACKEND", env, BACKENDS)
            backend = env
    if backend != "auto":
        why = _availability(backend, device)
        if why is None and backend not in _IMPLS.get(op, {}):
            why = "; ".join(_failures.get(backend, [])) or f"no {backend!r} implementation of {op!r}"
        if why:
            raise ValueError(f"backend: {backend!r} cannot run {op!r} on {device}: {why}")
        return backend
    for name in AUTO_ORDER.get(device.type, ("torch", "reference")):
        if _availability(name, device) is None and name in _IMPLS.get(op, {}):
            return name
    raise ValueError(f"backend: no implementation of {op!r} can run on {device}")


def get(op: str, backend: str, device: torch.device) -> Callable:
    return _IMPLS[op][resolve(op, backend, device)]


def available(op: str, device: torch.device | str = "cpu") -> tuple:
    """Backends that can run ``op`` on ``device`` now (for benchmarks and tests)."""
    device = torch.device(device)
    return tuple(b for b in BACKENDS
                 if _availability(b, device) is None and b in _IMPLS.get(op, {}))


def explain(op: str, device: torch.device | str = "cpu") -> Dict[str, str | None]:
    """For every backend name (in ``BACKENDS`` order): None when it can run ``op`` on ``device``
    now, else the reason it cannot (for ``csakd-fast info``, the benchmarks and the tests)."""
    _checks.choice("op", op, OPS)
    device = torch.device(device)
    out = {}
    for b in BACKENDS:
        why = _availability(b, device)
        if why is None and b not in _IMPLS.get(op, {}):
            why = "; ".join(_failures.get(b, [])) or f"no {b!r} implementation of {op!r}"
        out[b] = why
    return out


def per_op(backend, name: str = "backend") -> Dict[str, str]:
    """``backend`` as {op: backend name} over ``OPS``: one name for every op (``"torch"``), a
    mapping that names some ops (``{"csa": "cpp", "clra": "torch"}``) or the same as text
    (``"csa=cpp,clra=torch"``, the CLI's form); ops left out get ``"auto"``."""
    if isinstance(backend, str) and "=" in backend:
        pairs = {}
        for item in backend.split(","):
            op, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not op or not value or op in pairs:
                raise ValueError(f"{name}: expected a backend name or OP=NAME pairs separated by "
                                 f"commas (e.g. 'csa=cpp,clra=torch'), got {backend!r}")
            pairs[op] = value
        backend = pairs
    if isinstance(backend, str):
        _checks.choice(name, backend, CHOICES)
        return {op: backend for op in OPS}
    if not isinstance(backend, Mapping):
        raise ValueError(f"{name}: expected a name or a mapping {{op: name}}, got {backend!r}")
    unknown = sorted(set(backend) - set(OPS))
    if unknown:
        raise ValueError(f"{name}: expected ops among {', '.join(OPS)}, got {unknown}")
    for op, value in backend.items():
        _checks.choice(f"{name}[{op!r}]", value, CHOICES)
    return {op: backend.get(op, "auto") for op in OPS}
