"""The CSA as the public code computes it, kept as the baseline of every fused backend.

It materialises the upsampled maps and q, k, v, exactly as the public implementation does; every
fused backend must agree with it (tests/test_op_csa.py) and is benchmarked against it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..pixels import upsample_nearest
from .algebra import NORM_EPS
from .op import CSASpec, CSAWeights


def _proj(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1x1 convolution with a (Cout, Cin) matrix: (B, Cin, H, W) -> (B, Cout, H, W)."""
    return F.conv2d(x, w[:, :, None, None], b)


def csa_reference(x1, x2, x3, x4, w: CSAWeights, spec: CSASpec) -> torch.Tensor:
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
    heads, attention = spec.heads, spec.attention
    x1 = upsample_nearest(x1, spec.up1)
    x3 = upsample_nearest(x3, spec.up3)
    B, C, H, W = x2.shape
    D = w.wq.shape[0]
    d = D // heads
    q = _proj(x1, w.wq, w.bq).view(B, heads, d, H * W)
    k = _proj(x2, w.wk, w.bk).view(B, heads, d, H * W)
    v = _proj(x3, w.wv, w.bv).view(B, heads, d, H * W)
    if attention == "normalized":
        q = F.normalize(q - q.mean(-1, keepdim=True), dim=-1, eps=NORM_EPS)
        k = F.normalize(k - k.mean(-1, keepdim=True), dim=-1, eps=NORM_EPS)
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * w.temperature.view(1, heads, 1, 1)
    else:
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    attn = torch.softmax(logits, dim=-1)
    if attention == "legacy":
        attended = torch.einsum("bhqk,bhvd->bhqd", attn, v)
    else:
        attended = torch.einsum("bhqk,bhkd->bhqd", attn, v)
    att = _proj(attended.reshape(B, D, H, W), w.wo, w.bo) + x4
    if not w.gate:
        return att
    g = torch.sigmoid(_proj(torch.cat([x1, x2, x3, att], dim=1), w.wg, w.bg))
    return g[:, 0:1] * x1 + g[:, 1:2] * x2 + g[:, 2:3] * x3 + g[:, 3:4] * att
