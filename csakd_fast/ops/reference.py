"""The eager formulation of the public code, kept as the baseline of every fused backend.

It materialises q, k, v, the upsampled maps and the torch.cat growth, exactly as the public
implementation does; every fused backend must agree with it (tests/) and is benchmarked against it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..backends import register

NORM_EPS = 1e-12  # floor on a token's centred norm in the "normalized" attention


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def _proj(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1x1 convolution with a (Cout, Cin) matrix: (B, Cin, H, W) -> (B, Cout, H, W)."""
    return F.conv2d(x, w[:, :, None, None], b)


@register("csa", "reference")
def csa_reference(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo,
                  wg: Optional[torch.Tensor], bg: Optional[torch.Tensor],
                  temperature: Optional[torch.Tensor], heads: int, attention: str,
                  up1: int = 1, up3: int = 1) -> torch.Tensor:
    """Cross (self-)attention fusion, the public code's formulation.

    x2, x4: (B, C, H, W); x1, x3: (B, C, H/up1, W/up1), (B, C, H/up3, W/up3), nearest-upsampled
    here. q = Wq x1 + bq, k = Wk x2 + bk, v = Wv x3 + bv, each (B, D, N) split into ``heads``
    spectral-token groups of d = D / heads rows; per head, with N = H·W pixels contracted:

    - ``paper``:      A = softmax(q kᵀ / √d),            attended = A v
    - ``legacy``:     the public einsum 'bhqk,bhvd->bhqd': attended[i] = Σ_j v[j] (A has no effect)
    - ``normalized``: A = softmax(τ_h · q̂ k̂ᵀ), q̂ = (q − mean_N q) / ‖q − mean_N q‖ (likewise k)

    att = Wo attended + bo + x4; with the gate (wg: (4, 4C)),
    g = σ(Wg [x1; x2; x3; att] + bg) and out = g0 x1 + g1 x2 + g2 x3 + g3 att; without, out = att.
    """
    x1 = upsample_nearest(x1, up1)
    x3 = upsample_nearest(x3, up3)
    B, C, H, W = x2.shape
    D = wq.shape[0]
    d = D // heads
    q = _proj(x1, wq, bq).view(B, heads, d, H * W)
    k = _proj(x2, wk, bk).view(B, heads, d, H * W)
    v = _proj(x3, wv, bv).view(B, heads, d, H * W)
    if attention == "normalized":
        q = F.normalize(q - q.mean(-1, keepdim=True), dim=-1, eps=NORM_EPS)
        k = F.normalize(k - k.mean(-1, keepdim=True), dim=-1, eps=NORM_EPS)
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * temperature.view(1, heads, 1, 1)
    else:
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    attn = torch.softmax(logits, dim=-1)
    if attention == "legacy":
        attended = torch.einsum("bhqk,bhvd->bhqd", attn, v)
    else:
        attended = torch.einsum("bhqk,bhkd->bhqd", attn, v)
    att = _proj(attended.reshape(B, D, H, W), wo, bo) + x4
    if wg is None:
        return att
    g = torch.sigmoid(_proj(torch.cat([x1, x2, x3, att], dim=1), wg, bg))
    return g[:, 0:1] * x1 + g[:, 1:2] * x2 + g[:, 2:3] * x3 + g[:, 3:4] * att


def dense_block_reference(x: torch.Tensor, weights: Sequence[torch.Tensor],
                          biases: Sequence[torch.Tensor], groups: int) -> torch.Tensor:
    """ESRGAN-style dense block: x_k = LReLU(c_k([x, x_1..x_{k-1}])), out = 0.2·c5(·) + x."""
    feats = [x]
    for k in range(4):
        feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), weights[k], biases[k],
                                           padding=1, groups=groups), 0.2))
    return F.conv2d(torch.cat(feats, 1), weights[4], biases[4], padding=1, groups=groups) * 0.2 + x


@register("clra", "reference")
def clra_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                   groups: int, recompute: bool = False) -> torch.Tensor:
    """CLRA block: three dense blocks, out = 0.2·chain(x) + x.

    weights/biases: 15 each, dense block j's conv k at index 5j + k. ``recompute`` has no effect
    on the reference (it keeps what autograd keeps)."""
    y = x
    for j in range(3):
        y = dense_block_reference(y, weights[5 * j:5 * j + 5], biases[5 * j:5 * j + 5], groups)
    return y * 0.2 + x
