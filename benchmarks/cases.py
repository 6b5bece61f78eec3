"""What the harness times: cases, the suites that choose them, and the plug-in interface.

A :class:`Case` is one measurement point (name, mode, HR resolution, batch) whose ``build(backend,
wrap, device, dtype)`` returns an :class:`Instance` for one backend; ``backend`` is the name the
layers are built with (``"reference"`` for the ``compile`` backend) and ``wrap`` is applied to
every module that is called (``torch.compile`` for ``compile``, the identity otherwise). The same
weights (seed 0) and the same input sets (seeds 1000 + i) are used for every backend.

Modes: ``fwd`` (inference: ``torch.no_grad``), ``fwd+bwd`` (forward with gradients, then backward
from a fixed random output gradient; the record splits the time into ``fwd`` and ``bwd``),
``step`` (a whole training step, optimizer included).

Plug-ins. Any ``benchmarks/bench_<name>.py`` that defines ``cases(suite, device, dtype)`` adds
cases; ``suite`` is ``"smoke" | "quick" | "full"``. It returns a list of dicts::

    {"case": "csa_normalized",          # name of the table group (distinct from the built-ins)
     "ops": ("csa",),                   # ops used: the backends run are those available for all
     "res": 128, "batch": 2,            # HR side in pixels, batch size
     "build": build,                    # build(backend) -> (module, make_inputs)
     "modes": ("fwd", "fwd+bwd"),       # optional, this default
     "shapes": {"x2": (2, 86, 128, 128)}, "params": {"attention": "normalized"},  # optional
     "floor": floor,                    # optional: floor(mode, elem_bytes) -> {"bytes", "flops"}
     "compile": True}                   # optional: also run torch.compile(reference)

``build(backend)`` gets a concrete backend name (``"reference"`` when the harness measures
``compile``; it wraps the module itself) and returns an ``nn.Module`` on ``device``/``dtype`` —
``module(*inputs)`` returns one tensor — and ``make_inputs(seed) -> tuple of tensors`` on
``device``/``dtype``; the harness sets ``requires_grad`` on the floating inputs for ``fwd+bwd``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import csakd_fast as cf

from . import floors
from .memory import SavedBytes

MODES = ("fwd", "fwd+bwd", "step")

WIDTHS = {
    # the paper's AVIRIS setting (design.md §2): L = 172, 4-band MSI, nf = 86, gc = 43, ×4
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


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _rand(shape, g, device, dtype, normal=True):
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
            g = _generator(out.device, 7)
            self._grad = _rand(out.shape, g, out.device, out.dtype)
        out.backward(self._grad)
        return out.detach()


class _Call(nn.Module):
    """Binds keyword arguments so the harness can call ``module(*inputs)``."""

    def __init__(self, module: nn.Module, **kwargs):
        super().__init__()
        self.inner, self.kwargs = module, kwargs

    def forward(self, *xs):
        return self.inner(*xs, **self.kwargs)


def _model_inputs(w, batch, res, device, dtype, seed, target=False):
    s = w["scale"]
    g = _generator(device, seed)
    lr = _rand((batch, w["bands"], res // s, res // s), g, device, dtype, normal=False)
    msi = _rand((batch, w["msi_bands"], res, res), g, device, dtype, normal=False)
    if not target:
        return lr, msi
    return lr, msi, _rand((batch, w["bands"], res, res), g, device, dtype, normal=False)


def model_config(w: dict, which: str, recompute: bool = False) -> cf.CSAKDConfig:
    base = {k: w[k] for k in ("bands", "msi_bands", "nf", "gc", "attn_dim", "heads", "scale")}
    base["recompute"] = recompute
    if which == "teacher":
        return cf.CSAKDConfig.teacher(**base, layers=w["teacher_layers"])
    return cf.CSAKDConfig.student(**base, layers=w["student_layers"])


class ForwardInstance(Instance):
    """Inference forward of a whole network: ``model(lr_hsi, hr_msi)[0]`` under no_grad."""

    end_label = "fwd"

    def __init__(self, model, w, batch, res, device, dtype):
        self.model, self.modules = model, [model]
        self._args = (w, batch, res, device, dtype)

    def make_inputs(self, seed):
        w, batch, res, device, dtype = self._args
        return _model_inputs(w, batch, res, device, dtype, seed)

    def step(self, inputs, probe):
        with torch.no_grad():
            return self.model(*inputs)[0]


class TrainStepInstance(Instance):
    """One teacher training step (``students`` empty) or one co-training step (design.md §2): the
    teacher step (forward, cf.losses.teacher_loss, backward, AdamW), then the student step on the
    detached teacher outputs (cf.losses.student_loss). Saved bytes are counted per forward
    (model + loss); the two graphs are never alive at once."""

    def __init__(self, teacher, student, w, batch, res, device, dtype, lr=1e-4):
        self.teacher, self.student = teacher, student
        self.modules = [m for m in (teacher, student) if m is not None]
        self.opts = [torch.optim.AdamW(m.parameters(), lr=lr) for m in self.modules]
        self.end_label = "student" if student is not None else "teacher"
        self._args = (w, batch, res, device, dtype)

    def make_inputs(self, seed):
        w, batch, res, device, dtype = self._args
        return _model_inputs(w, batch, res, device, dtype, seed, target=True)

    def exclude(self, inputs):
        out = super().exclude(inputs)
        for opt in self.opts:
            for state in opt.state.values():
                out += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return out

    def step(self, inputs, probe):
        lr, msi, target = inputs
        opt_t = self.opts[0]
        with probe.saved("teacher"):
            t_out, t_fused = self.teacher(lr, msi)
            loss_t, _ = cf.losses.teacher_loss(t_out, target)
        opt_t.zero_grad(set_to_none=True)
        loss_t.backward()
        opt_t.step()
        if self.student is None:
            return None
        probe.mark("teacher")
        with probe.saved("student"):
            s_out, s_fused = self.student(lr, msi)
            loss_s, _ = cf.losses.student_loss(s_out, target, t_out.detach(), s_fused,
                                               t_fused.detach())
        opt_s = self.opts[1]
        opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        opt_s.step()
        return None


# --- the case record -----------------------------------------------------------------------------
@dataclass
class Case:
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
    source: str = "builtin"

    @property
    def key(self) -> tuple:
        return (self.name, self.mode, self.res, self.batch)


def _shape_list(t):
    return [int(d) for d in t]


def csa_cases(w, points, modes) -> List[Case]:
    C, s = w["nf"], w["scale"]
    out = []
    for res, batch in points:
        lo, hi = (batch, C, res // s, res // s), (batch, C, res, res)
        shapes = {"x1": lo, "x2": hi, "x3": lo, "x4": hi}

        def build(backend, wrap, device, dtype, mode, shapes=shapes):
            torch.manual_seed(0)
            m = cf.nn.CrossSelfAttention(C, w["attn_dim"], w["heads"], gate=True,
                                         attention="paper", backend=backend).to(device, dtype)

            def make(seed):
                g = _generator(device, seed)
                return tuple(_rand(sh, g, device, dtype) for sh in shapes.values())

            return ModuleInstance(wrap(_Call(m, up1=s, up3=s)), make, mode)

        for mode in modes:
            out.append(Case(
                "csa", mode, res, batch, ("csa",),
                build=lambda b, wr, d, dt, mode=mode, f=build: f(b, wr, d, dt, mode),
                shapes={k: _shape_list(v) for k, v in shapes.items()},
                params={"channels": C, "attn_dim": w["attn_dim"], "heads": w["heads"], "gate": True,
                        "attention": "paper", "up1": s, "up3": s},
                floor=lambda e, mode=mode, res=res, batch=batch: floors.csa_floor(
                    batch, C, res, res, s, s, mode, e)))
    return out


def clra_cases(w, points, modes, groups=1) -> List[Case]:
    nf, gc = w["nf"], w["gc"]
    name = "clra" if groups == 1 else f"clra_g{groups}"
    out = []
    for res, batch in points:
        shape = (batch, nf, res, res)

        def build(backend, wrap, device, dtype, mode, shape=shape):
            torch.manual_seed(0)
            m = cf.nn.CLRABlock(nf, gc, groups, backend=backend).to(device, dtype)

            def make(seed):
                return (_rand(shape, _generator(device, seed), device, dtype),)

            return ModuleInstance(wrap(m), make, mode)

        for mode in modes:
            out.append(Case(
                name, mode, res, batch, ("clra",),
                build=lambda b, wr, d, dt, mode=mode, f=build: f(b, wr, d, dt, mode),
                shapes={"x": list(shape)}, params={"nf": nf, "gc": gc, "groups": groups},
                floor=lambda e, mode=mode, res=res, batch=batch: floors.clra_floor(
                    batch, nf, gc, groups, res, res, mode, e)))
    return out


def _model_shapes(w, batch, res, target=False):
    s = w["scale"]
    d = {"lr_hsi": [batch, w["bands"], res // s, res // s], "hr_msi": [batch, w["msi_bands"], res, res]}
    if target:
        d["target"] = [batch, w["bands"], res, res]
    return d


def forward_cases(w, points, which) -> List[Case]:
    out = []
    for res, batch in points:
        def build(backend, wrap, device, dtype, res=res, batch=batch):
            torch.manual_seed(0)
            model = cf.CSAKDNet(model_config(w, which), backend=backend).to(device, dtype).eval()
            return ForwardInstance(wrap(model), w, batch, res, device, dtype)

        cfg = model_config(w, which)
        out.append(Case(which, "fwd", res, batch, ("csa", "clra"), build,
                        shapes=_model_shapes(w, batch, res),
                        params={"layers": list(cfg.layers), "nf": cfg.nf, "gc": cfg.gc,
                                "bands": cfg.bands, "msi_bands": cfg.msi_bands}))
    return out


def train_step_instance(w, backend, wrap, device, dtype, batch, res, cotrain: bool,
                        recompute: bool = False):
    torch.manual_seed(0)
    teacher = cf.CSAKDNet(model_config(w, "teacher", recompute), backend=backend).to(device, dtype).train()
    student = None
    if cotrain:
        student = cf.CSAKDNet(model_config(w, "student"), backend=backend).to(device, dtype).train()
        student = wrap(student)
    return TrainStepInstance(wrap(teacher), student, w, batch, res, device, dtype)


def cotrain_cases(w, points) -> List[Case]:
    out = []
    for res, batch in points:
        def build(backend, wrap, device, dtype, res=res, batch=batch):
            return train_step_instance(w, backend, wrap, device, dtype, batch, res, cotrain=True)

        out.append(Case("cotrain", "step", res, batch, ("csa", "clra"), build,
                        shapes=_model_shapes(w, batch, res, target=True),
                        params={"teacher_layers": list(w["teacher_layers"]),
                                "student_layers": list(w["student_layers"]), "optimizer": "AdamW",
                                "losses": "teacher_loss, student_loss"}))
    return out


# --- suites ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suite:
    """Which cases run and how long each is timed.

    ``compile``: where the ``compile`` backend runs, as (case name, mode, res, batch) patterns with
    None as a wildcard (compiling costs tens of seconds per graph on a 2-core CPU).
    Timing: ``warmup`` untimed iterations (the last one instrumented for memory; ``compile`` gets
    one more, its compilation), then ``reps`` = clamp(budget_s / iteration time, *reps)."""

    name: str
    width: str = "paper"
    csa: tuple = ()
    clra: tuple = ()
    clra_grouped: tuple = ()      # CLRA with the student's HSI-stream grouping (nf // 2)
    forward: tuple = ()           # teacher and student inference forward
    cotrain: tuple = ()
    op_modes: tuple = ("fwd", "fwd+bwd")
    compile: tuple = ((None, None, None, None),)
    warmup: int = 1
    reps: Tuple[int, int] = (3, 10)
    budget_s: float = 3.0
    input_sets: int = 3
    maxres_batches: tuple = ()
    maxres_cap: int = 4096
    maxres_recompute: bool = False  # also search with CSAKDConfig.recompute for fused backends


SUITES = {
    ("smoke", "cpu"): Suite("smoke", width="tiny", csa=((16, 1),), clra=((16, 1),),
                            forward=((16, 1),), cotrain=((16, 1),), compile=(), warmup=1,
                            reps=(2, 2), budget_s=0.0, input_sets=2),
    # ≤ 5 min on 2 cores: model cases at 64² only (the reference teacher step at 128² takes
    # tens of seconds there), compile only where one graph per op is affordable.
    ("quick", "cpu"): Suite("quick", csa=((128, 2), (256, 2)), clra=((64, 1), (128, 1)),
                            forward=((64, 1),), cotrain=((64, 1),), op_modes=("fwd+bwd",),
                            compile=(("csa", "fwd+bwd", 128, 2), ("clra", "fwd+bwd", 64, 1)),
                            warmup=1, reps=(3, 10), budget_s=3.0, input_sets=3),
    ("full", "cpu"): Suite("full", csa=((64, 2), (128, 2), (256, 2)),
                           clra=((64, 1), (128, 1), (256, 1)), clra_grouped=((128, 1),),
                           forward=((64, 1), (128, 1)), cotrain=((64, 1), (128, 1)),
                           # a whole network compiles for minutes on 2 cores: at 64² only
                           compile=(("csa", None, None, None), ("clra", None, None, None),
                                    ("clra_g43", None, None, None), ("teacher", "fwd", 64, 1),
                                    ("student", "fwd", 64, 1), ("cotrain", "step", 64, 1)),
                           warmup=1, reps=(5, 20), budget_s=10.0, input_sets=3),
    ("quick", "cuda"): Suite("quick", csa=((128, 8), (256, 8)), clra=((128, 8), (256, 8)),
                             forward=((256, 1),), cotrain=((128, 8),),
                             compile=(("csa", "fwd+bwd", 256, 8), ("clra", "fwd+bwd", 256, 8)),
                             warmup=3, reps=(10, 50), budget_s=0.5, input_sets=3),
    ("full", "cuda"): Suite("full", csa=((64, 8), (128, 8), (256, 8), (512, 8)),
                            clra=((64, 8), (128, 8), (256, 8), (512, 8)), clra_grouped=((256, 8),),
                            forward=((128, 1), (256, 1), (512, 1), (256, 8)),
                            cotrain=((128, 1), (256, 1), (512, 1), (128, 8), (256, 8)),
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


def _compile_allowed(suite: Suite, case: Case) -> bool:
    if not case.compile:
        return False
    for pattern in suite.compile:
        if all(p is None or p == v for p, v in zip(pattern, case.key)):
            return True
    return False


def builtin_cases(suite: Suite) -> List[Case]:
    w = WIDTHS[suite.width]
    cases = csa_cases(w, suite.csa, suite.op_modes) + clra_cases(w, suite.clra, suite.op_modes)
    if suite.clra_grouped:
        cases += clra_cases(w, suite.clra_grouped, suite.op_modes, groups=max(1, w["nf"] // 2))
    cases += forward_cases(w, suite.forward, "teacher") + forward_cases(w, suite.forward, "student")
    cases += cotrain_cases(w, suite.cotrain)
    return cases


def plugin_cases(suite: Suite, device: torch.device, dtype: torch.dtype,
                 folder: Optional[Path] = None, package: str = "benchmarks"):
    """Cases from ``bench_*.py`` modules beside this file; returns (cases, notes)."""
    here = Path(__file__).resolve().parent
    folder = Path(folder).resolve() if folder else here
    cases, notes = [], []
    for path in sorted(folder.glob("bench_*.py")):
        try:
            if folder == here:
                mod = importlib.import_module(f"{package}.{path.stem}")
            else:
                spec = importlib.util.spec_from_file_location(f"_bench_plugin_{path.stem}", path)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not stop the run
            notes.append(f"{path.name}: import failed ({type(e).__name__}: {e})")
            continue
        fn = getattr(mod, "cases", None)
        if not callable(fn):
            notes.append(f"{path.name}: defines no cases(suite, device, dtype); not run by the harness")
            continue
        try:
            specs = list(fn(suite.name, device, dtype))
            for spec in specs:
                cases += cases_from_spec(spec, source=path.name)
        except Exception as e:  # noqa: BLE001
            notes.append(f"{path.name}: cases() failed ({type(e).__name__}: {e})")
    return cases, notes


def cases_from_spec(spec: dict, source: str = "plugin") -> List[Case]:
    """Turn one plug-in dict (see the module docstring) into a Case per mode."""
    for k in ("case", "res", "batch", "build"):
        if k not in spec:
            raise ValueError(f"{source}: case spec misses {k!r}; got keys {sorted(spec)}")
    ops = spec.get("ops", spec.get("op", ()))
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    modes = tuple(spec.get("modes", ("fwd", "fwd+bwd")))
    out = []
    for mode in modes:
        if mode not in ("fwd", "fwd+bwd"):
            raise ValueError(f"{source}: modes: expected 'fwd' or 'fwd+bwd', got {mode!r}")

        def build(backend, wrap, device, dtype, mode=mode):
            module, make_inputs = tuple(spec["build"](backend))[:2]
            return ModuleInstance(wrap(module), make_inputs, mode)

        floor = spec.get("floor")
        out.append(Case(str(spec["case"]), mode, int(spec["res"]), int(spec["batch"]), ops, build,
                        shapes={k: _shape_list(v) for k, v in spec.get("shapes", {}).items()},
                        params=dict(spec.get("params", {})),
                        floor=(lambda e, f=floor, mode=mode: f(mode, e)) if floor else None,
                        compile=bool(spec.get("compile", True)), source=source))
    return out


def estimate_reps(suite: Suite, iter_s: float) -> int:
    lo, hi = suite.reps
    if iter_s <= 0:
        return hi
    return int(min(hi, max(lo, math.ceil(suite.budget_s / iter_s))))
