"""CSAKDConfig: every architectural choice of a CSAKD network, with the paper's presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

from .. import _checks

FUSIONS = ("sum", "sigmoid", "mhca", "csa", "concat")
ATTENTIONS = ("paper", "legacy", "normalized")
# index of each fusion in the public code's ``adaptive_fuse`` argument
FUSION_INDEX = {name: i for i, name in enumerate(FUSIONS)}


@dataclass(frozen=True)
class CSAKDConfig:
    """Architecture of a CSAKD network (docs/design.md, "The network").

    ``layers`` gives the number of CLRA blocks in the (hm, mh, h, m) streams. ``use_hm_blocks``
    False reproduces the public student, whose ``hm`` blocks are built (so public checkpoints
    load strictly) but never called: its HR joint stream is conv + LeakyReLU only.
    ``recompute`` asks fused CLRA backends to keep only each block's input for backward.
    ``residual`` (not in the paper; default off) adds the bilinearly upsampled LR-HSI to the
    output, so the network learns only the correction to it: parameter-free (the state dict is
    unchanged) and much faster to train from scratch (see README, "make demo").
    """

    bands: int
    msi_bands: int
    scale: int = 4
    nf: int = 86
    gc: int = 43
    layers: Tuple[int, int, int, int] = (6, 6, 4, 4)
    fusion: str = "csa"
    attention: str = "paper"
    heads: int = 4
    attn_dim: int = 64
    h_groups: int = 1
    m_groups: int = 1
    mh_groups: int = 1
    hm_groups: int = 1
    head_groups: int = 1
    use_hm_blocks: bool = True
    recompute: bool = False
    residual: bool = False

    def __post_init__(self):
        for name in ("bands", "msi_bands", "scale", "nf", "gc", "heads", "attn_dim", "h_groups",
                     "m_groups", "mh_groups", "hm_groups", "head_groups"):
            _checks.positive_int(name, getattr(self, name))
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else self.layers
        if not isinstance(layers, tuple) or len(layers) != 4:
            raise ValueError(f"layers: expected 4 block counts (hm, mh, h, m), got {self.layers!r}")
        for i, n in enumerate(layers):
            _checks.positive_int(f"layers[{i}]", n, minimum=0)
        object.__setattr__(self, "layers", layers)
        _checks.choice("fusion", self.fusion, FUSIONS)
        _checks.choice("attention", self.attention, ATTENTIONS)
        if self.attn_dim % self.heads:
            raise ValueError(f"attn_dim: expected a multiple of heads={self.heads}, got {self.attn_dim}")
        for stream in ("h", "m", "mh", "hm"):
            g = getattr(self, f"{stream}_groups")
            if self.nf % g or self.gc % g:
                raise ValueError(f"{stream}_groups: expected a divisor of nf={self.nf} and "
                                 f"gc={self.gc}, got {g}")
        if self.nf % self.head_groups or self.bands % self.head_groups:
            raise ValueError(f"head_groups: expected a divisor of nf={self.nf} and "
                             f"bands={self.bands}, got {self.head_groups}")
        for flag in ("use_hm_blocks", "recompute", "residual"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}: expected a bool, got {getattr(self, flag)!r}")

    # --- presets (docs/design.md, "The network"); keyword arguments override any field ---------
    @classmethod
    def teacher(cls, **overrides) -> "CSAKDConfig":
        """The paper's teacher: (6, 6, 4, 4) CLRA blocks, every conv ungrouped."""
        return cls(**{"layers": (6, 6, 4, 4), **overrides})

    @classmethod
    def teacher_large(cls, **overrides) -> "CSAKDConfig":
        """The public code's large teacher: (8, 8, 6, 6) CLRA blocks."""
        return cls(**{"layers": (8, 8, 6, 6), **overrides})

    @classmethod
    def student(cls, **overrides) -> "CSAKDConfig":
        """The paper's "1441" student: (1, 4, 4, 1) blocks, HSI-stream convs grouped by nf // 2,
        hm blocks built but unused (as in the public code)."""
        nf = overrides.get("nf", cls.nf)
        base = {"layers": (1, 4, 4, 1), "h_groups": max(1, nf // 2), "use_hm_blocks": False}
        return cls(**{**base, **overrides})

    # --- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CSAKDConfig":
        return cls(**_checks.known_fields("config", d, cls))

    def replace(self, **changes) -> "CSAKDConfig":
        return dataclasses.replace(self, **changes)
