"""Pixel-grid helpers shared by the ops: nearest upsampling, its adjoint (sum pooling), the
strided views that broadcast a low-resolution map against a high-resolution one, and the common
factor of two nearest-upsampled inputs (docs/design.md, "The fused CSA")."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, K, h, w) -> (B, K, factor·h, factor·w), nearest neighbour."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def hr_view(x: torch.Tensor, s: int) -> torch.Tensor:
    """An HR map (B, K, H, W) viewed as (B, K, H/s, s, W)."""
    B, K, H, W = x.shape
    return x.view(B, K, H // s, s, W)


def lr_view(x: torch.Tensor, s: int) -> torch.Tensor:
    """An LR map (B, K, h, w) as (B, K, h, 1, s·w), to broadcast against :func:`hr_view`.

    Only the width is upsampled (a copy of N/s elements); the height broadcasts with stride 0
    in a middle dimension, which keeps torch's inner loops contiguous (a stride-0 innermost
    dimension of size s is several times slower on the CPU)."""
    B, K, h, w = x.shape
    xw = x if s == 1 else x.repeat_interleave(s, -1)
    return xw.view(B, K, h, 1, w * s)


def sum_pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """s×s sum pooling (the adjoint of nearest upsampling): (B, K, H, W) -> (B, K, H/s, W/s)."""
    if s == 1:
        return x
    B, K, H, W = x.shape
    return hr_view(x.contiguous(), s).sum(3).view(B, K, H // s, W // s, s).sum(4)


def common_factor(x1, x3, up1: int, up3: int):
    """(x1', x3', S, f1, f3) for kernels that tile at one factor S: x1, x3 (nearest factors up1,
    up3) are returned at factor S or 1 — as given when up1 == up3 or one of them is 1, else
    upsampled by f_i = up_i / S to S = gcd(up1, up3) (their gradients are sum-pooled back by f_i)."""
    if up1 == up3 or 1 in (up1, up3):
        return x1, x3, max(up1, up3), 1, 1
    S = math.gcd(up1, up3)
    f1, f3 = up1 // S, up3 // S
    up = lambda x, f: x.repeat_interleave(f, 2).repeat_interleave(f, 3)  # noqa: E731
    return up(x1, f1), up(x3, f3), S, f1, f3
