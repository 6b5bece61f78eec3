"""What the harness times: cases, the suites that choose them, and the interface of the op modules.

A :class:`Case` is one measurement point (name, mode, HR resolution, batch) whose
``build(backend, wrap, device, dtype)`` returns an :class:`Instance` for one backend; ``backend``
is the name the layers are built with (``"reference"`` for the ``compile`` backend) and ``wrap``
is applied to every module that is called (``torch.compile`` for ``compile``, the identity
otherwise). The same weights (seed 0) and the same input sets (seeds 1000 + i) are used for every
backend. A case may add *variants*, labels timed beside the backends (``"triton/dgrad"``): a
variant builds with a backend and runs every step inside a context of its own (for instance a
switch that the backward reads), see :meth:`Case.instance`.

Modes: ``fwd`` (inference: ``torch.no_grad``), ``fwd+bwd`` (forward with gradients, then backward
from a fixed random output gradient; the record splits the time into ``fwd`` and ``bwd``),
``step`` (a whole training step, optimizer included).

Where the cases come from (:func:`suite_cases`): each fused op has a module in ``benchmarks/ops/``
(listed in ``benchmarks/ops/__init__.py``) whose ``cases(request)`` returns its cases for a
:class:`Request` — the suite, the device and dtype, and the command line's :class:`Options`
(points, CLRA groups, CSA attention modes, modes). An op module turns a
``build(backend, device, dtype) -> (module, make_inputs)`` into cases with :func:`module_cases`:
``module(*inputs)`` returns one tensor, ``make_inputs(seed)`` a tuple of tensors on the device in
the dtype (the harness sets ``requires_grad`` on the floating ones for ``fwd+bwd``). The model
cases (teacher and student forward, the co-training step) are in ``benchmarks/models.py``. The
suite (:class:`Suite`) says at which (res, batch) points each family of cases runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .memory import SavedBytes

MODES = ("fwd", "fwd+bwd", "step")

WIDTHS = {
    # the paper's AVIRIS setting (docs/design.md, "The network"): L = 172, 4-band MSI, nf = 86,
    # gc = 43, ×4
    "paper": {"bands": 172, "msi_bands": 4, "nf": 86, "gc": 43, "attn_dim": 64, "heads": 4,
              "scale": 4, "teacher_layers": (6, 6, 4, 4), "student_layers": (1, 4, 4, 1)},
    # for the harness's own tests: every code path in well under a second
    "tiny": {"bands": 8, "msi_bands": 3, "nf": 8, "gc": 4, "attn_dim": 8, "heads": 2,
             "scale": 4, "teacher_layers": (1, 1, 1, 1), "student_layers": (1, 1, 1, 1)},
}


# --- what a step sees ---------------------------------------------------------------------------
class Probe:
    """Handed to ``Instance.step``: ``mark(label)`` ends a timed segment, ``saved(name)`` wraps a
    forward whose saved-for-backward bytes are counted (only in the instrumented iteration)."""

    def __init__(self, clock=None, counters: Optional[Dict[str, SavedBytes]] = None,
                 exclude: Sequence[torch.Tensor] = ()):
        self.clock, self.counters, self.exclude = clock, counters, exclude

    def mark(self, label: str) -> None:
        if self.clock is not None:
            self.clock.mark(label)

    def saved(self, name: str):
        if self.counters is None:
            return contextlib.nullcontext()
        counter = SavedBytes(self.exclude)
        self.counters[name] = counter
        return counter


class Instance:
    """One case built for one backend."""

    end_label = "total"
    modules: List[nn.Module] = []

    def make_inputs(self, seed: int) -> tuple:
        raise NotImplementedError

    def step(self, inputs: tuple, probe: Probe) -> Optional[torch.Tensor]:
        """One iteration; returns the forward output where there is one (checked against the
        reference backend's on input set 0)."""
        raise NotImplementedError

    def prepare(self, inputs: tuple) -> None:
        """Untimed, before each iteration: drop gradients left by the previous one."""
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.grad is not None:
                x.grad = None
        for m in self.modules:
            for p in m.parameters():
                p.grad = None

    def exclude(self, inputs: tuple) -> list:
        """Tensors whose storages are not activations: parameters, optimizer state, inputs."""
        out = [x for x in inputs if isinstance(x, torch.Tensor)]
        for m in self.modules:
            out += list(m.parameters())
        return out


class ScopedInstance(Instance):
    """``inner`` with every step (forward and backward) inside ``scope()``: a case's variant."""

    def __init__(self, inner: Instance, scope: Callable[[], ContextManager]):
        self.inner, self.scope = inner, scope
        self.end_label, self.modules = inner.end_label, inner.modules

    def make_inputs(self, seed):
        return self.inner.make_inputs(seed)

    def prepare(self, inputs):
        self.inner.prepare(inputs)

    def exclude(self, inputs):
        return self.inner.exclude(inputs)

    def step(self, inputs, probe):
        with self.scope():
            return self.inner.step(inputs, probe)


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def rand(shape, g, device, dtype, normal=True):
    # drawn in the target dtype: a float32 temporary would double the memory of the largest
    # inputs (the maxres search's HR targets)
    f = torch.randn if normal else torch.rand
    return f(tuple(shape), generator=g, device=device, dtype=dtype)


class ModuleInstance(Instance):
    """``module(*inputs) -> tensor`` timed as inference (``fwd``) or forward + backward."""

    def __init__(self, module: nn.Module, make_inputs: Callable[[int], tuple], mode: str):
        if mode not in ("fwd", "fwd+bwd"):
            raise ValueError(f"mode: expected 'fwd' or 'fwd+bwd' for a module case, got {mode!r}")
        self.module, self._make, self.mode = module, make_inputs, mode
        self.modules = [module]
        self.end_label = "fwd" if mode == "fwd" else "bwd"
        self._grad = None

    def make_inputs(self, seed: int) -> tuple:
        xs = tuple(self._make(seed))
        if self.mode == "fwd+bwd":
            xs = tuple(x.detach().requires_grad_() if isinstance(x, torch.Tensor)
                       and x.is_floating_point() else x for x in xs)
        return xs

    def step(self, inputs, probe):
        if self.mode == "fwd":
            with torch.no_grad():
                return self.module(*inputs)
        with probe.saved("forward"):
            out = self.module(*inputs)
        probe.mark("fwd")
        if self._grad is None:  # first call is always a warm-up iteration
            g = generator(out.device, 7)
            self._grad = rand(out.shape, g, out.device, out.dtype)
        out.backward(self._grad)
        return out.detach()


class Call(nn.Module):
    """Binds keyword arguments so the harness can call ``module(*inputs)``."""

    def __init__(self, module: nn.Module, **kwargs):
        super().__init__()
        self.inner, self.kwargs = module, kwargs

    def forward(self, *xs):
        return self.inner(*xs, **self.kwargs)


# --- the case record -----------------------------------------------------------------------------
Scope = Callable[[], ContextManager]


@dataclass
class Case:
    """One measurement point. ``model``: a whole network (10× the output tolerance, ``compile``
    timed last). ``extra``: a secondary case (another attention mode, recompute), timed after the
    model cases (a deadline cuts it first). ``variants``: label -> (the backend it builds with,
    the scope around every step), timed beside that backend wherever it runs."""

    name: str
    mode: str
    res: int
    batch: int
    ops: Tuple[str, ...]
    build: Callable[..., Instance]
    shapes: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    floor: Optional[Callable[[int], dict]] = None  # elem_bytes -> {"bytes", "flops", "formula"}
    compile: bool = True
    model: bool = False
    extra: bool = False
    variants: Dict[str, Tuple[str, Scope]] = field(default_factory=dict)
    source: str = __name__

    @property
    def key(self) -> tuple:
        return (self.name, self.mode, self.res, self.batch)

    def base(self, label: str) -> str:
        """The backend a label builds with (itself, unless it is a variant)."""
        return self.variants[label][0] if label in self.variants else label

    def instance(self, label: str, wrap, device, dtype) -> Instance:
        inst = self.build(self.base(label), wrap, device, dtype)
        return ScopedInstance(inst, self.variants[label][1]) if label in self.variants else inst


def shape_list(t):
    return [int(d) for d in t]


def module_cases(name: str, ops: Sequence[str], res: int, batch: int,
                 build: Callable[[str, torch.device, torch.dtype], tuple], modes: Sequence[str], *,
                 shapes: Optional[dict] = None, params: Optional[dict] = None,
                 floor: Optional[Callable[[str, int], dict]] = None, compile: bool = True,
                 extra: bool = False, variants: Optional[Callable[[str], dict]] = None,
                 source: str = __name__) -> List[Case]:
    """A Case per mode of ``module(*inputs)``, from ``build(backend, device, dtype) -> (module,
    make_inputs)``; ``floor(mode, elem_bytes)``; ``variants(mode)`` -> the variants of that mode."""
    out = []
    for mode in modes:
        if mode not in ("fwd", "fwd+bwd"):
            raise ValueError(f"{name}: modes: expected 'fwd' or 'fwd+bwd', got {mode!r}")

        def make(backend, wrap, device, dtype, mode=mode):
            module, make_inputs = tuple(build(backend, device, dtype))[:2]
            return ModuleInstance(wrap(module), make_inputs, mode)

        out.append(Case(name, mode, int(res), int(batch), tuple(ops), make,
                        shapes={k: shape_list(v) for k, v in (shapes or {}).items()},
                        params=dict(params or {}),
                        floor=(lambda e, mode=mode: floor(mode, e)) if floor else None,
                        compile=compile, extra=extra, variants=dict(variants(mode) if variants else {}),
                        source=source))
    return out


# --- suites ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suite:
    """Which cases run and how long each is timed.

    ``points``: family -> (res, batch) points; the families are the op modules' (``csa``,
    ``csa_normalized``, ``clra``, ``clra_grouped`` — the student's HSI-stream grouping nf // 2 —,
    ``clra_recompute``) and the model cases' (``forward``: teacher and student inference,
    ``cotrain``, ``cotrain_recompute``); a family without points does not run.
    ``op_modes``: the modes of the main op cases (``csa``, ``clra``).
    ``compile``: where the ``compile`` backend runs, as (case name, mode, res, batch) patterns with
    None as a wildcard (compiling costs tens of seconds per graph on a 2-core CPU).
    Timing: ``warmup`` untimed iterations (the last one instrumented for memory; ``compile`` gets
    one more, its compilation), then ``reps`` = clamp(budget_s / iteration time, *reps)."""

    name: str
    width: str = "paper"
    points: Dict[str, tuple] = field(default_factory=dict)
    op_modes: tuple = ("fwd", "fwd+bwd")
    compile: tuple = ((None, None, None, None),)
    warmup: int = 1
    reps: Tuple[int, int] = (3, 10)
    budget_s: float = 3.0
    input_sets: int = 3
    maxres_batches: tuple = ()
    maxres_cap: int = 4096
    maxres_recompute: bool = False  # also search with CSAKDConfig.recompute for fused backends


_SMOKE = ((16, 1),)
SUITES = {
    ("smoke", "cpu"): Suite("smoke", width="tiny", points={
        "csa": _SMOKE, "csa_normalized": _SMOKE, "clra": _SMOKE, "clra_recompute": _SMOKE,
        "forward": _SMOKE, "cotrain": _SMOKE, "cotrain_recompute": _SMOKE},
        compile=(), warmup=1, reps=(2, 2), budget_s=0.0, input_sets=2),
    # ≤ 5 min on 2 cores: model cases at 64² only (the reference teacher step at 128² takes
    # tens of seconds there), compile only where one graph per op is affordable.
    ("quick", "cpu"): Suite("quick", points={
        "csa": ((128, 2), (256, 2)), "csa_normalized": ((128, 2),), "clra": ((64, 1), (128, 1)),
        "clra_recompute": ((128, 1),), "forward": ((64, 1),), "cotrain": ((64, 1),)},
        op_modes=("fwd+bwd",), compile=(("csa", "fwd+bwd", 128, 2), ("clra", "fwd+bwd", 64, 1)),
        warmup=1, reps=(3, 10), budget_s=3.0, input_sets=3),
    ("full", "cpu"): Suite("full", points={
        "csa": ((64, 2), (128, 2), (256, 2)), "csa_normalized": ((128, 2), (256, 2), (512, 2)),
        "clra": ((64, 1), (128, 1), (256, 1)), "clra_grouped": ((128, 1),),
        "clra_recompute": ((128, 1), (256, 1)), "forward": ((64, 1), (128, 1)),
        "cotrain": ((64, 1), (128, 1))},
        # a whole network compiles for minutes on 2 cores: at 64² only
        compile=(("csa", None, None, None), ("clra", None, None, None),
                 ("clra_g43", None, None, None), ("teacher", "fwd", 64, 1),
                 ("student", "fwd", 64, 1), ("cotrain", "step", 64, 1)),
        warmup=1, reps=(5, 20), budget_s=10.0, input_sets=3),
    ("quick", "cuda"): Suite("quick", points={
        "csa": ((128, 8), (256, 8)), "csa_normalized": ((128, 8),), "clra": ((128, 8), (256, 8)),
        "clra_recompute": ((256, 8),), "forward": ((256, 1),), "cotrain": ((128, 8),),
        "cotrain_recompute": ((128, 8),)},
        compile=(("csa", "fwd+bwd", 256, 8), ("clra", "fwd+bwd", 256, 8)),
        warmup=3, reps=(10, 50), budget_s=0.5, input_sets=3),
    ("full", "cuda"): Suite("full", points={
        "csa": ((64, 8), (128, 8), (256, 8), (512, 8)),
        "csa_normalized": ((128, 8), (256, 8), (512, 8)),
        "clra": ((64, 8), (128, 8), (256, 8), (512, 8)), "clra_grouped": ((256, 8),),
        "clra_recompute": ((256, 8), (512, 8)),
        "forward": ((128, 1), (256, 1), (512, 1), (256, 8)),
        "cotrain": ((128, 1), (256, 1), (512, 1), (128, 8), (256, 8)),
        "cotrain_recompute": ((128, 8),)},
        compile=(("csa", "fwd+bwd", None, None), ("csa", "fwd", 256, 8),
                 ("clra", "fwd+bwd", None, None), ("clra", "fwd", 256, 8),
                 ("teacher", "fwd", 256, 1), ("cotrain", "step", 128, 8)),
        warmup=3, reps=(5, 50), budget_s=0.5, input_sets=3,
        maxres_batches=(1, 8), maxres_recompute=True),
}


def get_suite(name: str, device: torch.device) -> Suite:
    key = (name, device.type)
    if key not in SUITES and (name, "cpu") in SUITES and name == "smoke":
        key = (name, "cpu")  # the smoke suite is the same everywhere
    if key not in SUITES:
        known = sorted({n for n, _ in SUITES})
        raise ValueError(f"suite: expected one of {known} for device {device.type}, got {name!r}")
    return SUITES[key]


def with_repeats(suite: Suite, repeats: int) -> Suite:
    """``suite`` with exactly ``repeats`` timed iterations per run instead of its time budget."""
    if repeats < 1:
        raise ValueError(f"repeats: expected a positive number of timed iterations, got {repeats}")
    return dataclasses.replace(suite, reps=(repeats, repeats), budget_s=0.0)


# --- what the command line changes, and the cases of a run ------------------------------------------
@dataclass(frozen=True)
class Options:
    """The command line's changes to a suite's op cases (None: the suite's choice).

    ``res``/``batch``: replace the resolutions / batch sizes of every op case family the suite
    runs (the other one is kept from the family's points; the model cases keep theirs).
    ``groups``: the CLRA cases for each of these groups (``clra``, ``clra_g<groups>`` and their
    ``_recompute``). ``attention``: the CSA cases for each of these attention modes (``csa`` for
    paper, ``csa_<mode>``). ``modes``: the op cases' modes (a case that only differs in backward
    keeps only ``fwd+bwd``)."""

    res: Optional[Tuple[int, ...]] = None
    batch: Optional[Tuple[int, ...]] = None
    groups: Optional[Tuple[int, ...]] = None
    attention: Optional[Tuple[str, ...]] = None
    modes: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Request:
    """What an op module's ``cases(request)`` is asked for."""

    suite: Suite
    device: torch.device
    dtype: torch.dtype
    options: Options = Options()

    @property
    def width(self) -> dict:
        return WIDTHS[self.suite.width]

    def points(self, family: str) -> List[Tuple[int, int]]:
        """The family's (res, batch) points: the suite's, with ``--res`` / ``--batch`` applied."""
        own = list(self.suite.points.get(family, ()))
        if not own:
            return []
        o = self.options
        res = o.res or tuple(dict.fromkeys(r for r, _ in own))
        batch = o.batch or tuple(dict.fromkeys(b for _, b in own))
        if not (o.res or o.batch):
            return own
        return [(r, b) for r in res for b in batch]

    def modes(self, default: Sequence[str], allowed: Sequence[str] = ("fwd", "fwd+bwd")) -> tuple:
        """``--modes`` (or ``default``) among the modes a family has."""
        return tuple(m for m in (self.options.modes or default) if m in allowed)


def suite_cases(request: Request) -> List[Case]:
    """Every case of a run: the op modules' main cases, the model cases, then the secondary
    cases (``extra``), so that a deadline cuts those first."""
    from . import models, ops  # they build on this module

    cases = ops.cases(request) + models.cases(request)
    return sorted(cases, key=lambda c: c.extra)  # stable: each module's order is kept


def select(cases: List[Case], patterns: Optional[Sequence[str]]) -> Tuple[List[Case], List[str]]:
    """The cases whose name matches one of ``patterns`` (shell-style, ``'clra*'``; None: all),
    and a note per pattern that matches none."""
    if not patterns:
        return list(cases), []
    keep = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    notes = [f"--cases: {p!r} matches no case of this run" for p in patterns
             if not any(fnmatch.fnmatchcase(c.name, p) for c in keep)]
    return keep, notes


def compile_allowed(suite: Suite, case: Case) -> bool:
    if not case.compile:
        return False
    for pattern in suite.compile:
        if all(p is None or p == v for p, v in zip(pattern, case.key)):
            return True
    return False


def estimate_reps(suite: Suite, iter_s: float) -> int:
    lo, hi = suite.reps
    if iter_s <= 0:
        return hi
    return int(min(hi, max(lo, math.ceil(suite.budget_s / iter_s))))
