"""TrainConfig: every setting of a training run, the paper's values by default.

A run is configured by a TOML file (``csakd-fast train --config run.toml``), by a built-in preset
name (``paper``, ``demo``: ``csakd_fast/training/presets/<name>.toml``) and by flags; later sources
override earlier ones: defaults < file < flags. TOML was chosen over YAML because Python reads it
without a dependency (``tomllib``); the keys are the field names below, flat, e.g.::

    mode = "cotrain"
    epochs = 800
    teacher = { nf = 86, gc = 43 }          # CSAKDConfig overrides of the teacher preset
    student = { layers = [1, 4, 4, 1] }
    backend = { csa = "cpp" }               # per fused op (or one name: backend = "torch")

Paper defaults (docs/design.md, "The network"): AdamW lr 1e-4, teacher cosine schedule, student StepLR(100
epochs, ×0.9), 128² crops, batch 8, 800 epochs, 35 dB noise on the LR-HSI, loss weights 0.1.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .. import _checks, backends
from ..models import CSAKDConfig

MODES = ("teacher", "cotrain", "distill")
SCHEDULES = ("cosine", "step", "constant")
PRESETS = ("paper", "demo")
_MODEL_FIELDS = {f.name for f in dataclasses.fields(CSAKDConfig)} - {"bands", "msi_bands", "scale"}


@dataclass
class TrainConfig:
    """Settings of ``csakd-fast train`` (field = TOML key = ``--set`` key).

    Modes: ``teacher`` trains a teacher alone; ``cotrain`` (the paper) takes, every iteration, a
    teacher step and then a student step on the teacher's detached outputs of that iteration;
    ``distill`` trains a student from the frozen teacher of ``teacher_checkpoint``.

    Data: ``data`` is ``"reference"`` (the embedded scenes: train/val/test splits) or a list of
    HR-HSI cube files (then ``val_data``/``test_data`` name held-out files; ``srf`` a sensor name
    or an (M, L) matrix as nested lists; ``wavelengths`` for files without band centres).

    Backends: ``backend`` is one name for every fused op or one per op, as a table
    (``backend = { csa = "cpp", clra = "torch" }``) or as text (``--backend csa=cpp,clra=torch``);
    :func:`csakd_fast.backends.per_op` validates it.
    """

    mode: str = "cotrain"
    # --- data ------------------------------------------------------------------------------
    data: Any = "reference"
    val_data: Any = None
    test_data: Any = None
    srf: Any = "sentinel2"
    wavelengths: Any = None
    scale: int = 4
    crop_size: int = 128
    batch_size: int = 8
    crops_per_epoch: Optional[int] = None
    snr_lr: Optional[float] = 35.0
    snr_msi: Optional[float] = None
    eval_tile: Optional[int] = None
    workers: int = 0
    # --- models ----------------------------------------------------------------------------
    teacher_preset: str = "teacher"
    student_preset: str = "student"
    teacher: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    teacher_checkpoint: Optional[str] = None
    # the backend of every fused op ("auto", "reference", "torch", "triton", "cpp", "cuda"), or one
    # per op: a table ``backend = { csa = "cpp", clra = "torch" }`` or the text "csa=cpp,clra=torch"
    # (ops left out: "auto"). Stored as one name when every op gets the same, else as the full
    # table {op: name} (see _backend_setting).
    backend: Any = "auto"
    # --- optimisation ----------------------------------------------------------------------
    epochs: int = 800
    lr: float = 1e-4
    student_lr: Optional[float] = None
    weight_decay: float = 1e-2
    teacher_schedule: str = "cosine"
    student_schedule: str = "step"
    step_epochs: int = 100
    step_gamma: float = 0.9
    min_lr: float = 0.0
    grad_clip: Optional[float] = None
    sam_weight: float = 0.1
    band_weight: float = 0.1
    kd_weight: float = 0.1
    feat_weight: float = 0.1
    # --- bookkeeping -----------------------------------------------------------------------
    eval_every: int = 1
    checkpoint_every: int = 0
    max_iters: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self):
        _checks.choice("mode", self.mode, MODES)
        for name in ("scale", "crop_size", "batch_size", "epochs", "step_epochs", "eval_every"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("workers", "checkpoint_every", "seed"):
            _checks.positive_int(name, getattr(self, name), minimum=0)
        for name in ("crops_per_epoch", "max_iters", "threads", "eval_tile"):
            if getattr(self, name) is not None:
                _checks.positive_int(name, getattr(self, name))
        if self.crop_size % self.scale:
            raise ValueError(f"crop_size: expected a multiple of scale={self.scale}, got {self.crop_size}")
        for name in ("lr", "step_gamma"):
            _positive(name, getattr(self, name))
        if self.student_lr is not None:
            _positive("student_lr", self.student_lr)
        for name in ("weight_decay", "min_lr", "sam_weight", "band_weight", "kd_weight", "feat_weight"):
            _positive(name, getattr(self, name), allow_zero=True)
        for name in ("grad_clip", "snr_lr", "snr_msi"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), allow_zero=name != "grad_clip")
        _checks.choice("teacher_schedule", self.teacher_schedule, SCHEDULES)
        _checks.choice("student_schedule", self.student_schedule, SCHEDULES)
        _checks.choice("teacher_preset", self.teacher_preset, ("teacher", "teacher_large", "student"))
        _checks.choice("student_preset", self.student_preset, ("student", "teacher", "teacher_large"))
        self.backend = _backend_setting(self.backend)
        _checks.choice("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("teacher", "student"):
            overrides = getattr(self, name)
            if not isinstance(overrides, dict):
                raise ValueError(f"{name}: expected a table of CSAKDConfig fields, got {overrides!r}")
            unknown = sorted(set(overrides) - _MODEL_FIELDS)
            if unknown:
                raise ValueError(f"{name}: unknown model fields {unknown}; known: {sorted(_MODEL_FIELDS)}")
        if self.mode == "distill" and not self.teacher_checkpoint:
            raise ValueError("teacher_checkpoint: mode 'distill' needs the frozen teacher's checkpoint file")
        if self.data != "reference":
            self.data = _paths("data", self.data)
            if self.val_data is None:
                raise ValueError("val_data: training on your own files needs held-out validation "
                                 "files (best checkpoint by validation SAM)")
        for name in ("val_data", "test_data"):
            if getattr(self, name) is not None:
                setattr(self, name, _paths(name, getattr(self, name)))
        for flag in ("tensorboard", "progress"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}: expected true or false, got {getattr(self, flag)!r}")

    # --- models of the run -----------------------------------------------------------------
    def model_config(self, role: str, bands: int, msi_bands: int) -> CSAKDConfig:
        """The CSAKDConfig of ``role`` ("teacher" | "student") for the data's band counts."""
        _checks.choice("role", role, ("teacher", "student"))
        preset = getattr(CSAKDConfig, getattr(self, f"{role}_preset"))
        overrides = dict(getattr(self, role))
        if "layers" in overrides:
            overrides["layers"] = tuple(overrides["layers"])
        return preset(bands=bands, msi_bands=msi_bands, scale=self.scale, **overrides)

    # --- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        return cls(**_checks.known_fields(source, d, cls, "settings"))

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes}, "overrides")


def preset_dict(name: str) -> dict:
    """The settings of a built-in preset (``paper``: the defaults; ``demo``: the make demo run)."""
    _checks.choice("preset", name, PRESETS)
    text = resources.files(__package__).joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def load_config(source=None, overrides: dict | None = None) -> TrainConfig:
    """Defaults < ``source`` (a preset name or a TOML file path) < ``overrides``."""
    d: dict = {}
    if source is not None:
        if str(source) in PRESETS:
            d = preset_dict(str(source))
        else:
            p = Path(source)
            if not p.is_file():
                raise ValueError(f"config: expected a preset ({', '.join(PRESETS)}) or a TOML file, "
                                 f"got {str(source)!r} (no such file)")
            try:
                d = tomllib.loads(p.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"config: {p} is not valid TOML ({e})") from e
    d.update(overrides or {})
    return TrainConfig.from_dict(d, f"config {source}" if source else "config")


def parse_value(text: str):
    """A ``--set key=value`` value: a TOML value (number, bool, string, array, inline table),
    or the text itself when it is not one (bare strings need no quotes)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _backend_setting(spec):
    """``backend`` validated with :func:`csakd_fast.backends.per_op` and in one canonical form: a
    name when every op gets the same one, else {op: name} over ``backends.OPS``. The form is plain
    JSON (config.json, state.pt), and equal choices compare equal however they were written, so
    that a resumed run given the same choice in another form is not refused."""
    per_op = backends.per_op(spec, name="backend")
    names = set(per_op.values())
    return names.pop() if len(names) == 1 else per_op


def _positive(name, v, allow_zero=False):
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} "
                         f"finite number, got {v!r}")


def _paths(name, v) -> list:
    items = [v] if isinstance(v, (str, Path)) else v
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, (str, Path)) for p in items):
        raise ValueError(f"{name}: expected a file path or a non-empty list of them, got {v!r}")
    return [str(p) for p in items]
