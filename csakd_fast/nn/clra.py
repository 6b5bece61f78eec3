"""CLRABlock (public name ``MultiScaleFeatAggregation``) and its dense blocks."""
from __future__ import annotations

import torch
from torch import nn

from .. import _checks, backends
from ..ops.clra import clra


def init_dense_conv(conv: nn.Conv2d, scale: float = 0.1) -> None:
    """Kaiming-normal (fan_in, a=0) scaled by ``scale``, bias 0 (ESRGAN's init, as the public code)."""
    nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
    with torch.no_grad():
        conv.weight.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class DenseBlock(nn.Module):
    """Five 3x3 convs over a growing concatenation (public name ``MultiScaleFeatFusionBlock``):
    c_k: nf + (k−1)·gc -> gc for k ≤ 4, c5: nf + 4·gc -> nf, all with ``groups``.
    Holds the parameters; the computation runs in :class:`CLRABlock` through the clra op."""

    def __init__(self, nf: int, gc: int, groups: int = 1):
        super().__init__()
        for k in range(1, 6):
            cin, cout = nf + (k - 1) * gc, (gc if k < 5 else nf)
            conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=True, groups=groups)
            init_dense_conv(conv)
            setattr(self, f"conv{k}", conv)

    def convs(self):
        return [getattr(self, f"conv{k}") for k in range(1, 6)]


class CLRABlock(nn.Module):
    """Three dense blocks and an outer residual: y = 0.2 · D3(D2(D1(x))) + x, (B, nf, H, W) -> same.

    ``recompute`` asks a fused backend to keep only x for backward and rebuild the rest. The
    block runs as one op (:mod:`csakd_fast.ops.clra`; docs/design.md, "The fused CLRA")."""

    def __init__(self, nf: int, gc: int, groups: int = 1, backend: str = "auto",
                 recompute: bool = False):
        super().__init__()
        _checks.positive_int("nf", nf)
        _checks.positive_int("gc", gc)
        _checks.positive_int("groups", groups)
        if nf % groups or gc % groups:
            raise ValueError(f"groups: expected a divisor of nf={nf} and gc={gc}, got {groups}")
        backends.check("clra", backend)
        self.nf, self.gc, self.groups = nf, gc, groups
        self.backend, self.recompute = backend, bool(recompute)
        self.check_finite = True   # CSAKDNet turns it off for its blocks (see CrossSelfAttention)
        self.MFB1 = DenseBlock(nf, gc, groups)
        self.MFB2 = DenseBlock(nf, gc, groups)
        self.MFB3 = DenseBlock(nf, gc, groups)

    def extra_repr(self) -> str:
        return (f"nf={self.nf}, gc={self.gc}, groups={self.groups}, backend={self.backend!r}, "
                f"recompute={self.recompute}")

    def convs(self):
        return self.MFB1.convs() + self.MFB2.convs() + self.MFB3.convs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.tensor("x", x, 4)
        _checks.channels("x", x, self.nf)
        _checks.like_parameters("x", x, self)
        if self.check_finite:
            _checks.finite("x", x)
        convs = self.convs()
        return clra(x, [c.weight for c in convs], [c.bias for c in convs], groups=self.groups,
                    recompute=self.recompute, backend=self.backend)
