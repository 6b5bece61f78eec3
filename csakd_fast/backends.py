"""Backend registry: which implementation runs each fused op (docs/design.md, "Backends").

An op (``"csa"``, ``"clra"``) has at most one implementation per backend name (``BACKENDS``).
Each op package registers its implementations explicitly when it is imported
(``csakd_fast/ops/<op>/__init__.py``): an :class:`Impl` declares what it supports — device
types, input dtypes, a readiness check (a compiled extension, a GPU) and shape limits — and an
implementation that cannot be loaded (Triton not installed) is recorded with :func:`unavailable`
and its reason. This module imports nothing from the ops.

:func:`resolve` is the one place that chooses. An explicit name runs that implementation or is a
``ValueError`` that says why it cannot (never a silent reroute to another backend); ``"auto"``
takes, for the call's device, the first backend of ``AUTO_ORDER`` that can run the call (dtype
and shape included); the environment variable ``CSAKD_BACKEND`` (a name, or per-op pairs
``csa=cpp,clra=torch``) replaces ``"auto"``. Models choose per op (:func:`per_op`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

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
DEFAULT_ORDER = ("torch", "reference")   # other device types (meta, ...)


def _ready(device: torch.device) -> Optional[str]:
    return None


def _no_limits(channels: Optional[int]) -> Optional[str]:
    return None


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


@dataclass(frozen=True)
class Impl:
    """One backend's implementation of one op and what it supports.

    ``call``: what the op's front door runs (the op's package fixes its signature).
    ``forward``/``backward``: what the op's custom op runs for this backend (None for an eager
    implementation, such as the reference, which never goes through the custom op).
    ``devices``: the device types it runs on (None: any). ``dtypes``: the input dtypes it takes.
    ``ready(device)``: None, or why it cannot run on ``device`` now (a missing build, a GPU too
    old). ``limits(channels)``: None, or why a call of that width is beyond it."""

    op: str
    backend: str
    call: Callable
    dtypes: Tuple[torch.dtype, ...]
    devices: Optional[Tuple[str, ...]] = None
    forward: Optional[Callable] = None
    backward: Optional[Callable] = None
    ready: Callable[[torch.device], Optional[str]] = _ready
    limits: Callable[[Optional[int]], Optional[str]] = _no_limits

    def why_not(self, device: torch.device, dtype: Optional[torch.dtype] = None,
                channels: Optional[int] = None) -> Optional[str]:
        """None when this implementation can run a call on ``device`` with ``dtype`` and
        ``channels`` (None: not asked), else the reason."""
        device = torch.device(device)
        if self.devices is not None and device.type not in self.devices:
            return (f"the {self.backend} backend of {self.op} runs on {', '.join(self.devices)} "
                    f"tensors, got {device}")
        why = self.ready(device)
        if why:
            return why
        if dtype is not None and dtype not in self.dtypes:
            return (f"the {self.backend} backend of {self.op} takes {_dtype_names(self.dtypes)}, "
                    f"got {dtype}")
        return self.limits(channels)


_IMPLS: Dict[str, Dict[str, Impl]] = {}
_UNAVAILABLE: Dict[str, Dict[str, str]] = {}   # op -> backend -> why it could not be loaded


def register(impl: Impl) -> Impl:
    """Make ``impl`` the implementation of ``impl.op`` for ``impl.backend``."""
    _checks.choice("op", impl.op, OPS)
    _checks.choice("backend", impl.backend, BACKENDS)
    _IMPLS.setdefault(impl.op, {})[impl.backend] = impl
    _UNAVAILABLE.get(impl.op, {}).pop(impl.backend, None)
    return impl


def unavailable(op: str, backend: str, why: str) -> None:
    """Record that ``op`` has no ``backend`` implementation here, and why (an import failure)."""
    _checks.choice("op", op, OPS)
    _checks.choice("backend", backend, BACKENDS)
    _UNAVAILABLE.setdefault(op, {})[backend] = why


def _impls(op: str) -> Dict[str, Impl]:
    _checks.choice("op", op, OPS)
    if op not in _IMPLS:
        raise ValueError(f"op: no implementation of {op!r} is registered; import csakd_fast.ops "
                         f"(or the layers, csakd_fast.nn) first")
    return _IMPLS[op]


def _missing(op: str, backend: str) -> str:
    why = _UNAVAILABLE.get(op, {}).get(backend)
    return why or f"no {backend!r} implementation of {op!r}"


def get(op: str, backend: str) -> Impl:
    """The registered implementation of ``op`` for the concrete ``backend``."""
    impls = _impls(op)
    if backend not in impls:
        raise ValueError(f"backend: {_missing(op, backend)}")
    return impls[backend]


def fused(op: str, backend: str, x: torch.Tensor, arg: str) -> Impl:
    """The implementation a custom op runs for ``backend`` on input ``x`` (named ``arg``): the op
    can be called directly (opcheck, a compiled graph), so the declaration the front door
    resolved against is checked again here, before any kernel runs."""
    impl = get(op, backend)
    if impl.forward is None:
        raise ValueError(f"backend: {backend!r} is an eager implementation of {op}; the custom op "
                         f"runs the fused backends")
    why = impl.why_not(x.device, x.dtype, x.shape[1])
    if why:
        raise ValueError(f"{arg}: {why}")
    return impl


def check(op: str, backend: str, name: str = "backend") -> str:
    """``backend`` must be ``"auto"`` or a backend with a registered implementation of ``op``
    (whether it can run on a given device is :func:`resolve`'s question, at call time)."""
    _checks.choice(name, backend, CHOICES)
    if backend != "auto" and backend not in _impls(op):
        has = [b for b in BACKENDS if b in _IMPLS.get(op, {})]
        example = ",".join(f"{o}={backend if o != op else 'auto'}" for o in OPS)
        raise ValueError(f"{name}: {backend!r} cannot run {op!r}: {_missing(op, backend)} ({op} "
                         f"has {', '.join(has)}); choose per op, e.g. {example!r}")
    return backend


def _env_choice(op: str) -> Optional[str]:
    env = os.environ.get("CSAKD_BACKEND")
    return per_op(env, "CSAKD_BACKEND")[op] if env else None


# torch.compile evaluates the choice once, at trace time (it reads the environment and asks the
# hardware): the result is a constant of the graph
@torch.compiler.assume_constant_result
def resolve(op: str, backend: str, device: torch.device, dtype: Optional[torch.dtype] = None,
            channels: Optional[int] = None, arg: str = "input") -> str:
    """The concrete backend that runs ``op`` for a call on ``device`` (``dtype``, ``channels``
    of the input named ``arg``) when ``backend`` is asked for."""
    _checks.choice("backend", backend, CHOICES)
    impls = _impls(op)
    device = torch.device(device)
    if backend == "auto":
        backend = _env_choice(op) or "auto"
    if backend != "auto":
        impl = impls.get(backend)
        why = _missing(op, backend) if impl is None else impl.why_not(device, dtype, channels)
        if why:
            raise ValueError(f"backend: {backend!r} cannot run {op!r} on {device}: {why} ({arg})")
        return backend
    for name in AUTO_ORDER.get(device.type, DEFAULT_ORDER):
        impl = impls.get(name)
        if impl is not None and impl.why_not(device, dtype, channels) is None:
            return name
    raise ValueError(f"backend: no implementation of {op!r} can run on {device}"
                     + (f" with {arg} of {dtype}" if dtype is not None else ""))


def explain(op: str, device: torch.device | str = "cpu",
            dtype: Optional[torch.dtype] = None) -> Dict[str, Optional[str]]:
    """For every backend name (in ``BACKENDS`` order): None when it can run ``op`` on ``device``
    now (with ``dtype`` when given), else the reason it cannot (for ``csakd-fast info``, the
    benchmarks and the tests)."""
    impls = _impls(op)
    device = torch.device(device)
    return {b: (impls[b].why_not(device, dtype) if b in impls else _missing(op, b))
            for b in BACKENDS}


def available(op: str, device: torch.device | str = "cpu",
              dtype: Optional[torch.dtype] = None) -> tuple:
    """Backends that can run ``op`` on ``device`` now (:func:`explain` without the reasons)."""
    return tuple(b for b, why in explain(op, device, dtype).items() if why is None)


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
