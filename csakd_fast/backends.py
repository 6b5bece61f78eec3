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
from typing import Callable, Dict

import torch

from . import _checks

BACKENDS = ("reference", "torch", "triton", "cpp", "cuda")
CHOICES = BACKENDS + ("auto",)

# Fastest first, by device type. The order follows the benchmark harness (benchmarks/RESULTS.md).
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "torch", "reference"),
    "cpu": ("cpp", "torch", "reference"),
}

_IMPLS: Dict[str, Dict[str, Callable]] = {}
# Modules that register implementations; imported on first use so that a missing Triton or
# native build never breaks ``import csakd_fast``.
_PROVIDERS = {
    "reference": ("csakd_fast.ops.reference",),
    "torch": (),
    "triton": (),
    "cpp": (),
    "cuda": (),
}
_loaded: Dict[str, str | None] = {}


def register(op: str, backend: str):
    """Decorator: ``fn`` implements ``op`` for ``backend``."""
    _checks.choice("backend", backend, BACKENDS)

    def deco(fn):
        _IMPLS.setdefault(op, {})[backend] = fn
        return fn

    return deco


def _load(backend: str) -> str | None:
    """Import the provider modules of ``backend``; return why it failed, or None."""
    if backend not in _loaded:
        why = None
        for mod in _PROVIDERS[backend]:
            try:
                importlib.import_module(mod)
            except Exception as e:  # ImportError, or a broken optional build
                why = f"{mod} failed to import: {e}"
                break
        _loaded[backend] = why
    return _loaded[backend]


def _availability(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run on ``device``, else the reason it cannot."""
    why = _load(backend)
    if why:
        return why
    if backend == "triton":
        interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
        if device.type != "cuda" and not interp:
            return f"Triton needs a CUDA device (or TRITON_INTERPRET=1 on the CPU), got {device}"
    if backend == "cuda" and device.type != "cuda":
        return f"the CUDA extension needs a CUDA device, got {device}"
    if backend == "cpp" and device.type != "cpu":
        return f"the C++ extension runs on the CPU, got {device}"
    return None


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
            why = f"no {backend!r} implementation of {op!r} is registered"
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
