"""The five fusion modules of the public code (``adaptive_fuse`` 0–4; docs/design.md, "The
network").

Each takes x1 = h, x2 = m, x3 = mh, x4 = hm, where x1 and x3 may be ``up`` times lower in
resolution (they are nearest-upsampled streams); the attention fusions hand that to the fused op,
the others upsample here.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn import CrossSelfAttention
from ..ops.pixels import upsample_nearest


class SumFusion(nn.Module):
    """out = x1 + x2 + x3 + x4 (``adaptive_fuse=0``; the public model has no ``fuse_att`` then)."""

    def forward(self, x1, x2, x3, x4, up1: int = 1, up3: int = 1):
        return upsample_nearest(x1, up1) + x2 + upsample_nearest(x3, up3) + x4


class SigmoidFusion(nn.Module):
    """out = Σ σ(w_i) ⊙ x_i with a learned (4, C, 1, 1) ``weights`` (randn init)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(4, channels, 1, 1))

    def forward(self, x1, x2, x3, x4, up1: int = 1, up3: int = 1):
        a = torch.sigmoid(self.weights)
        return (a[0] * upsample_nearest(x1, up1) + a[1] * x2
                + a[2] * upsample_nearest(x3, up3) + a[3] * x4)


class ConcatFusion(nn.Module):
    """g = σ(attention_conv([x1; x2; x3; x4])) (4C -> 4, 1x1), out = Σ g_i · x_i."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention_conv = nn.Conv2d(4 * channels, 4, 1)

    def forward(self, x1, x2, x3, x4, up1: int = 1, up3: int = 1):
        x1, x3 = upsample_nearest(x1, up1), upsample_nearest(x3, up3)
        g = torch.sigmoid(self.attention_conv(torch.cat([x1, x2, x3, x4], 1)))
        return g[:, 0:1] * x1 + g[:, 1:2] * x2 + g[:, 2:3] * x3 + g[:, 3:4] * x4


def make_fusion(cfg, backend: str) -> nn.Module:
    if cfg.fusion == "sum":
        return SumFusion()
    if cfg.fusion == "sigmoid":
        return SigmoidFusion(cfg.nf)
    if cfg.fusion == "concat":
        return ConcatFusion(cfg.nf)
    return CrossSelfAttention(cfg.nf, cfg.attn_dim, cfg.heads, gate=cfg.fusion == "csa",
                              attention=cfg.attention, backend=backend)
