"""Backend "torch" of the fused CSA: the two-pass algorithm (docs/design.md, "The fused CSA") in
plain aten ops, on any device and dtype.

Forward, per sample (shapes of :func:`csakd_fast.ops.csa.reference.csa_reference`; x1, x3 at low
resolution, nearest factors up1, up3; X_lr ∈ R^{C×n}, n = N / up²):

1. pass 1, the pixel reductions (:func:`pass1`): with an upsampled x1 the Gram is
   X1 X2ᵀ = X1_lr · pool(X2)ᵀ, pool = the up1×up1 *sum* pooling, so it costs C²·N/up1² and
   never builds the upsampled x1. ``normalized`` centres first (the means of an upsampled map are
   the means of the LR map) and also forms G11c = up1²·X1c_lr X1c_lrᵀ and G22c = X2c X2cᵀ;
   ``legacy`` needs no pass 1 at all.
2. the small algebra (:mod:`csakd_fast.ops.csa.algebra`): logits, softmax, M = Wo·blockdiag(A)·Wv, c.
3. pass 2, the pixel map: att = up(M X3_lr + c) + X4 (the C×C product at LR), the gate logits
   z = Wg1 X1 + Wg2 X2 + Wg3 X3 + Wg4 att + bg (x1, x3 terms at LR), g = σ(z) and
   out = g0 x1 + g1 x2 + g2 x3 + g3 att, the x1/x3 terms written through broadcast views.

Backward recomputes att and g from the inputs and the saved pass-1 statistics (the only tensors
saved besides the op's inputs: ``gram`` (B, C, C), ``proj`` (B, 2, D, C) for normalized,
``vecs`` (B, 2, C); nothing of size N), then

    dg_i = Σ_c dout ⊙ Y_i,  dz = dg ⊙ g(1−g),  d_att = g3 dout + Wg4ᵀ dz  (= dx4),
    dM = pool(d_att) X3_lrᵀ,  dc = d_att·1,   dx3 = pool(g2 dout) + Wg3ᵀ pool(dz) + Mᵀ pool(d_att),
    dx1 = pool(g0 dout) + Wg1ᵀ pool(dz) + E12 pool(X2) + up1²(E11 X1_lr + e1),
    dx2 = g1 dout + Wg2ᵀ dz + up(E12ᵀ X1_lr) + E22 X2 + e2,

with (E, e) and the weight gradients from :func:`algebra.backward`. Per-pixel temporaries live
only inside one call. Compute dtype: float64 for float64 inputs; otherwise the small matrices and
the reductions' results are float32 and the per-pixel products run in the input dtype.
"""
from __future__ import annotations

import torch

from ... import backends
from ..pixels import hr_view as _hr
from ..pixels import lr_view as _lr
from ..pixels import sum_pool
from . import algebra
from .algebra import compute_dtype, stats_shapes
from .op import CSASpec, CSAStats, CSAWeights, fused_call, gradients


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)


def _mm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(P, K) or (B, P, K) @ (B, K, h, w) -> (B, P, h, w).

    bmm with a broadcast (stride-0) weight: torch.matmul would fold a 2-D weight by transposing
    x into a (B·h·w, K) copy."""
    B, K, h, w = x.shape
    a = a.expand(B, *a.shape[-2:]) if a.dim() == 2 else a
    return torch.bmm(a, _flat(x)).view(B, -1, h, w)


def _gram(a: torch.Tensor, b: torch.Tensor, ct) -> torch.Tensor:
    """Σ over pixels of a bᵀ: (B, K, h, w) x (B, L, h, w) -> (B, K, L) in ``ct``."""
    return torch.bmm(_flat(a), _flat(b).transpose(1, 2)).to(ct)


def pass1(x1, x2, w: CSAWeights, attention: str, up1: int) -> CSAStats:
    """(gram, proj, vecs) of :mod:`algebra` from x1 (at LR) and x2."""
    B, C = x2.shape[:2]
    ct = compute_dtype(x2.dtype)
    shapes = stats_shapes(B, C, w.wq.shape[0], attention)
    gram, proj, vecs = (x2.new_empty(s, dtype=ct) for s in shapes)
    if attention == "paper":
        p2 = sum_pool(x2, up1)
        gram = _gram(x1, p2, ct)
        vecs = torch.stack([x1.sum((2, 3), dtype=ct) * up1 ** 2, p2.sum((2, 3), dtype=ct)], 1)
    elif attention == "normalized":
        m1, m2 = x1.mean((2, 3), dtype=ct), x2.mean((2, 3), dtype=ct)
        x1c = x1 - m1.to(x1.dtype)[:, :, None, None]
        x2c = x2 - m2.to(x2.dtype)[:, :, None, None]
        gram = _gram(x1c, sum_pool(x2c, up1), ct)
        g11 = _gram(x1c, x1c, ct) * up1 ** 2
        g22 = _gram(x2c, x2c, ct)
        proj = torch.stack([w.wq @ g11, w.wk @ g22], 1)
        vecs = torch.stack([m1, m2], 1)
    return CSAStats(gram, proj, vecs)


def _attended(x3, x4, M, c, up3):
    """att = up(M X3_lr + c) + X4, (B, C, H, W) in the input dtype."""
    dt = x4.dtype
    mx3 = _mm(M.to(dt), x3)
    if up3 == 1:
        return mx3.add_(x4).add_(c.to(dt)[:, :, None, None])
    mx3.add_(c.to(dt)[:, :, None, None])
    return (_hr(x4, up3) + _lr(mx3, up3)).view(x4.shape)


def _gates(x1, x2, x3, att, wg, bg, up1, up3):
    """g = σ(Wg [x1; x2; x3; att] + bg), (B, 4, H, W); the x1, x3 terms at their LR."""
    C = x2.shape[1]
    wg = wg.to(x2.dtype)
    z = _mm(wg[:, C:2 * C], x2).add_(_mm(wg[:, 3 * C:], att)).add_(bg.to(x2.dtype)[:, None, None])
    _hr(z, up1).add_(_lr(_mm(wg[:, :C], x1), up1))
    _hr(z, up3).add_(_lr(_mm(wg[:, 2 * C:3 * C], x3), up3))
    return z.sigmoid_()


def forward(x1, x2, x3, x4, w: CSAWeights, spec: CSASpec):
    """(out, stats); see the module docstring."""
    x1, x2, x3, x4 = (t.contiguous() for t in (x1, x2, x3, x4))
    wc = w.to(compute_dtype(x2.dtype))
    stats = pass1(x1, x2, wc, spec.attention, spec.up1)
    small = algebra.forward(wc, *stats, spec.heads, spec.attention, x2.shape[2] * x2.shape[3])
    att = _attended(x3, x4, small.M, small.c, spec.up3)
    if not w.gate:
        return att, stats
    up1, up3 = spec.up1, spec.up3
    g = _gates(x1, x2, x3, att, w.wg, w.bg, up1, up3)
    out = att.mul_(g[:, 3:4])                       # att is not needed any more
    out.addcmul_(x2, g[:, 1:2])
    _hr(out, up1).addcmul_(_lr(x1, up1), _hr(g[:, 0:1], up1))
    _hr(out, up3).addcmul_(_lr(x3, up3), _hr(g[:, 2:3], up3))
    return out, stats


def _chan_dot(dout, x, s):
    """Σ_c dout ⊙ up_s(x) per pixel: (B, H, W)."""
    if s == 1:
        return (dout * x).sum(1)
    return (_hr(dout, s) * _lr(x, s)).sum(1).view(dout.shape[0], *dout.shape[2:])


def backward(dout, x1, x2, x3, x4, w: CSAWeights, stats: CSAStats, spec: CSASpec):
    """Gradients [dx1, dx2, dx3, dx4, d(each weight)] (:func:`op.gradients`)."""
    x1, x2, x3, x4, dout = (t.contiguous() for t in (x1, x2, x3, x4, dout))
    B, C, H, W = x2.shape
    dt, ct = x2.dtype, compute_dtype(x2.dtype)
    heads, attention, up1, up3 = spec
    wg, bg = w.wg, w.bg
    wc = w.to(ct)
    small = algebra.forward(wc, *stats, heads, attention, H * W)
    M = small.M.to(dt)
    if w.gate:
        att = _attended(x3, x4, small.M, small.c, up3)
        g = _gates(x1, x2, x3, att, wg, bg, up1, up3)
        dg = torch.stack([_chan_dot(dout, x1, up1), _chan_dot(dout, x2, 1),
                          _chan_dot(dout, x3, up3), _chan_dot(dout, att, 1)], 1)
        dz = dg.mul_(g).mul_(1 - g)                                        # (B, 4, H, W)
        wgd = wg.to(dt)
        wg1, wg2, wg3, wg4 = (wgd[:, i * C:(i + 1) * C].T for i in range(4))
        d_att = _mm(wg4, dz).addcmul_(dout, g[:, 3:4])
        dx2 = _mm(wg2, dz).addcmul_(dout, g[:, 1:2])
        dz1, dz3 = sum_pool(dz, up1), sum_pool(dz, up3)
        dx1 = sum_pool(dout * g[:, 0:1], up1).add_(_mm(wg1, dz1))
        dx3 = sum_pool(dout * g[:, 2:3], up3).add_(_mm(wg3, dz3))
        dwg = torch.cat([_gram(dz1, x1, ct), _gram(dz, x2, ct), _gram(dz3, x3, ct),
                         _gram(dz, att, ct)], 2).sum(0)
        dbg = dz.sum((0, 2, 3), dtype=ct)
        del att, g, dz, dz1, dz3
    else:
        d_att = dout.clone()
        dx1, dx2, dx3 = torch.zeros_like(x1), torch.zeros_like(x2), torch.zeros_like(x3)
        dwg = dbg = None
    pd = sum_pool(d_att, up3)
    dM, dc = _gram(pd, x3, ct), d_att.sum((2, 3), dtype=ct)
    dx3.add_(_mm(M.transpose(1, 2), pd))
    gr = algebra.backward(dM, dc, wc, small, *stats, heads, attention)
    if attention != "legacy":
        E12 = gr.E12.to(dt)
        dx1.add_(_mm(E12, sum_pool(x2, up1))).add_(gr.e1.to(dt)[:, :, None, None], alpha=up1 ** 2)
        t = _mm(E12.transpose(1, 2), x1)
        if attention == "normalized":
            dx1.add_(_mm(gr.E11.to(dt), x1), alpha=up1 ** 2)
            t.add_(gr.e2.to(dt)[:, :, None, None])
            dx2.add_(_mm(gr.E22.to(dt), x2))
        else:
            dx2.add_(gr.e2.to(dt)[:, :, None, None])
        _hr(dx2, up1).add_(_lr(t, up1))
    return gradients(dx1, dx2, dx3, d_att, gr, dwg, dbg, w)


IMPL = backends.Impl("csa", "torch", fused_call("torch"), forward=forward, backward=backward,
                     dtypes=(torch.float64, torch.float32, torch.bfloat16, torch.float16))
