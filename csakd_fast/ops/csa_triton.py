"""Backend "triton" of the fused CSA: Triton kernels for both pixel passes, forward and backward.

The algorithm is design.md §3 (and :mod:`csa_torch`, which states the formulas); the small
per-sample algebra between the passes is :mod:`csa_small` (a few tiny torch ops). Tokens are the
channels, the pixel axis is tiled ("spectral-token tiling"): every kernel holds a (C_PAD, pixels)
tile, C_PAD = the next power of two ≥ max(C, 16), channels beyond C masked to zero.

Kernels (all accumulate in float32; inputs float32, float16 or bfloat16, loaded and converted to
float32 in the kernel, outputs stored in the input dtype):

- :func:`_gram_kernel` (pass 1, and dM in backward): split-N reduction Σ_p (a_{p//up} − ma)
  (b_p − mb)ᵀ and the two sums; grid (B, splits), each program loops over its pixel range and
  writes one (C, C) partial; the partials are summed by torch (deterministic, no atomics). ``a`` is
  read at the LR index p // up (x1 at LR), never upsampled.
- :func:`_apply_fwd_kernel` (pass 2): att = M x3 + c + x4, z = Wg [x1; x2; x3; att] + bg,
  out = Σ σ(z)_i Y_i. A program owns BLOCK_L *coarse* pixels (the LR pixels of factor S) and
  loops over their S×S HR pixels, so every term of an LR input (M x3 + c, Wg1 x1, Wg3 x3) is
  computed once per LR pixel. C×C and 16×C products run on ``tl.dot`` (the 4 gate rows are
  zero-padded to 16).
- :func:`_apply_bwd1_kernel`: recomputes att and g, writes dx4 = d_att = g3 dout + Wg4ᵀ dz,
  dx3 (pooled over the S×S block in registers when x3 is at LR), and in ``legacy`` mode dx1 and
  dx2; otherwise it stores (g0, g1, dz0..3) per pixel (6 float32, a transient workspace) for
  pass 2. Split-N partials of dWg (dz Yᵀ) and dbg.
- :func:`_apply_bwd2_kernel` (``paper``/``normalized``): dx1 = g0 dout + Wg1ᵀ dz + E12 x2 + E11 x1
  + e1 (pooled in registers), dx2 = g1 dout + Wg2ᵀ dz + E12ᵀ x1 + E22 x2 + e2; it runs after the
  small backward, which needs dM from the whole image first.

x1 and x3 may have different nearest factors: with S = up1 = up3 or one of them 1 the kernels read
both as they are; otherwise (both > 1 and different) S = gcd(up1, up3) and the inputs are first
upsampled to factor S (torch), their gradients pooled back.

Precision: float32 inputs use ``input_precision="ieee"`` dots (fp32 results within ~1e-6 of float64);
float16/bfloat16 inputs use TF32 dots on the float32-converted tiles (bf16 and fp16 values are
exact in TF32; the float32 small matrices are rounded to 10 bits). Offsets are int64 where an
index product (batch × C × N) can pass 2³¹. float64 is not a Triton path: the registered backend
sends float64 calls to the torch backend.

Tile sizes are powers of two, dots are ≥ 16 in every dimension, every ragged edge is masked; the
block sizes below are untuned defaults (no GPU was at hand when they were written).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..backends import register
from . import csa_op, csa_small
from .csa_small import Weights, stats_shapes
from .csa_torch import common_factor, sum_pool

NG = 16  # the 4 gate rows, zero-padded to the smallest tl.dot size


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _gram_kernel(a_ptr, b_ptr, ma_ptr, mb_ptr, g_ptr, sa_ptr, sb_ptr,
                 C, H, W, up_a, tiles_per_split,
                 CENTRE: tl.constexpr, C_PAD: tl.constexpr, BLOCK_P: tl.constexpr,
                 PREC: tl.constexpr):
    """Partial (C, C) Gram Σ_p a_{p//up} b_pᵀ over one pixel range, and the sums of a and b."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    n_split = tl.num_programs(1)
    N = H * W
    wa = W // up_a
    na = (H // up_a) * wa
    rc = tl.arange(0, C_PAD)
    cm = rc < C
    rc64 = rc.to(tl.int64)
    a_base = a_ptr + pid_b * C * na
    b_base = b_ptr + pid_b * C * N
    if CENTRE:
        ma = tl.load(ma_ptr + pid_b * C + rc, mask=cm, other=0.0)
        mb = tl.load(mb_ptr + pid_b * C + rc, mask=cm, other=0.0)
    acc = tl.zeros([C_PAD, C_PAD], dtype=tl.float32)
    sa = tl.zeros([C_PAD], dtype=tl.float32)
    sb = tl.zeros([C_PAD], dtype=tl.float32)
    for t in range(0, tiles_per_split):
        p = (pid_s * tiles_per_split + t) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < N
        pa = ((p // W) // up_a) * wa + (p % W) // up_a
        m2 = cm[:, None] & pm[None, :]
        a = tl.load(a_base + rc64[:, None] * na + pa[None, :], mask=m2, other=0.0).to(tl.float32)
        b = tl.load(b_base + rc64[:, None] * N + p[None, :], mask=m2, other=0.0).to(tl.float32)
        if CENTRE:
            a = tl.where(m2, a - ma[:, None], 0.0)
            b = tl.where(m2, b - mb[:, None], 0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PREC)
        sa += tl.sum(a, 1)
        sb += tl.sum(b, 1)
    part = pid_b * n_split + pid_s
    tl.store(g_ptr + part * C * C + rc64[:, None] * C + rc[None, :], acc,
             mask=cm[:, None] & cm[None, :])
    tl.store(sa_ptr + part * C + rc, sa, mask=cm)
    tl.store(sb_ptr + part * C + rc, sb, mask=cm)


@triton.jit
def _apply_fwd_kernel(x1_ptr, x2_ptr, x3_ptr, x4_ptr, m_ptr, c_ptr, wg_ptr, bg_ptr, out_ptr,
                      C, H, W, S,
                      X1_LR: tl.constexpr, X3_LR: tl.constexpr, GATE: tl.constexpr,
                      C_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PREC: tl.constexpr):
    """out = Σ σ(z)_i Y_i (or att without the gate) for BLOCK_L coarse pixels × S² HR pixels."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(1)
    N = H * W
    w = W // S
    L = (H // S) * w
    l = pid_t * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = l < L
    ly = l // w
    lx = l % w
    rc = tl.arange(0, C_PAD)
    rc64 = rc.to(tl.int64)
    rg = tl.arange(0, NG)
    sq = rc[:, None] * C_PAD + rc[None, :]               # a padded (C_PAD, C_PAD) matrix
    cmask = (rc < C)[:, None] & lm[None, :]
    hr_base = pid_b * C * N + rc64[:, None] * N
    lr_off = pid_b * C * L + rc64[:, None] * L + l[None, :]
    mat = m_ptr + pid_b * C_PAD * C_PAD
    cvec = tl.load(c_ptr + pid_b * C_PAD + rc)
    gmat = rg[:, None] * C_PAD + rc[None, :]
    if X1_LR:
        x1l = tl.load(x1_ptr + lr_off, mask=cmask, other=0.0).to(tl.float32)
    if X3_LR:
        x3l = tl.load(x3_ptr + lr_off, mask=cmask, other=0.0).to(tl.float32)
        mx3l = tl.dot(tl.load(mat + sq), x3l, input_precision=PREC) + cvec[:, None]
    if GATE:
        zl = tl.zeros([NG, BLOCK_L], dtype=tl.float32) + tl.load(bg_ptr + rg)[:, None]
        if X1_LR:
            zl += tl.dot(tl.load(wg_ptr + gmat), x1l, input_precision=PREC)
        if X3_LR:
            zl += tl.dot(tl.load(wg_ptr + 2 * NG * C_PAD + gmat), x3l, input_precision=PREC)
    for t in range(0, S * S):
        p = (ly * S + t // S) * W + lx * S + t % S
        offs = hr_base + p[None, :]
        x2 = tl.load(x2_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
        x4 = tl.load(x4_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
        if X3_LR:
            x3 = x3l
            att = mx3l + x4
        else:
            x3 = tl.load(x3_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            att = tl.dot(tl.load(mat + sq), x3, input_precision=PREC) + cvec[:, None] + x4
        if GATE:
            if X1_LR:
                x1 = x1l
                z = zl
            else:
                x1 = tl.load(x1_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
                z = zl + tl.dot(tl.load(wg_ptr + gmat), x1, input_precision=PREC)
            if not X3_LR:
                z += tl.dot(tl.load(wg_ptr + 2 * NG * C_PAD + gmat), x3, input_precision=PREC)
            z += tl.dot(tl.load(wg_ptr + NG * C_PAD + gmat), x2, input_precision=PREC)
            z += tl.dot(tl.load(wg_ptr + 3 * NG * C_PAD + gmat), att, input_precision=PREC)
            g = tl.sigmoid(z)
            # row i of the (16, BLOCK_L) gate tile as a (BLOCK_L,) vector: a masked sum
            g0 = tl.sum(tl.where(rg[:, None] == 0, g, 0.0), 0)
            g1 = tl.sum(tl.where(rg[:, None] == 1, g, 0.0), 0)
            g2 = tl.sum(tl.where(rg[:, None] == 2, g, 0.0), 0)
            g3 = tl.sum(tl.where(rg[:, None] == 3, g, 0.0), 0)
            out = g0[None, :] * x1 + g1[None, :] * x2 + g2[None, :] * x3 + g3[None, :] * att
        else:
            out = att
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _apply_bwd1_kernel(x1_ptr, x2_ptr, x3_ptr, x4_ptr, do_ptr, m_ptr, mt_ptr, c_ptr,
                       wg_ptr, wgt_ptr, bg_ptr,
                       dx1_ptr, dx2_ptr, dx3_ptr, dx4_ptr, gd_ptr, dwg_ptr, dbg_ptr,
                       C, H, W, S, tiles_per_split,
                       X1_LR: tl.constexpr, X3_LR: tl.constexpr, GATE: tl.constexpr,
                       QK: tl.constexpr, C_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
                       PREC: tl.constexpr):
    """Gate backward, dx4 = d_att, dx3, and (legacy) dx1, dx2; split-N partials of dWg, dbg."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1)
    n_split = tl.num_programs(1)
    N = H * W
    w = W // S
    L = (H // S) * w
    rc = tl.arange(0, C_PAD)
    rc64 = rc.to(tl.int64)
    rg = tl.arange(0, NG)
    sq = rc[:, None] * C_PAD + rc[None, :]               # a padded (C_PAD, C_PAD) matrix
    mat = m_ptr + pid_b * C_PAD * C_PAD
    matt = mt_ptr + pid_b * C_PAD * C_PAD
    cvec = tl.load(c_ptr + pid_b * C_PAD + rc)
    gmat = rg[:, None] * C_PAD + rc[None, :]              # (16, C_PAD) block of wg
    gmatt = rc[:, None] * NG + rg[None, :]                # (C_PAD, 16) block of wgᵀ
    if GATE:
        aw1 = tl.zeros([NG, C_PAD], dtype=tl.float32)
        aw2 = tl.zeros([NG, C_PAD], dtype=tl.float32)
        aw3 = tl.zeros([NG, C_PAD], dtype=tl.float32)
        aw4 = tl.zeros([NG, C_PAD], dtype=tl.float32)
        abg = tl.zeros([NG], dtype=tl.float32)
        bgv = tl.load(bg_ptr + rg)
    for it in range(0, tiles_per_split):
        l = (pid_s * tiles_per_split + it) * BLOCK_L + tl.arange(0, BLOCK_L)
        lm = l < L
        ly = l // w
        lx = l % w
        cmask = (rc < C)[:, None] & lm[None, :]
        hr_base = pid_b * C * N + rc64[:, None] * N
        lr_off = pid_b * C * L + rc64[:, None] * L + l[None, :]
        if X1_LR:
            x1l = tl.load(x1_ptr + lr_off, mask=cmask, other=0.0).to(tl.float32)
        if X3_LR:
            x3l = tl.load(x3_ptr + lr_off, mask=cmask, other=0.0).to(tl.float32)
            mx3l = tl.dot(tl.load(mat + sq), x3l, input_precision=PREC) + cvec[:, None]
            accd = tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
            if GATE:
                acc3 = tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
        if GATE:
            zl = tl.zeros([NG, BLOCK_L], dtype=tl.float32) + bgv[:, None]
            if X1_LR:
                zl += tl.dot(tl.load(wg_ptr + gmat), x1l, input_precision=PREC)
            if X3_LR:
                zl += tl.dot(tl.load(wg_ptr + 2 * NG * C_PAD + gmat), x3l, input_precision=PREC)
            pdz = tl.zeros([NG, BLOCK_L], dtype=tl.float32)
            if X1_LR and not QK:
                acc1 = tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
        for t in range(0, S * S):
            p = (ly * S + t // S) * W + lx * S + t % S
            offs = hr_base + p[None, :]
            dout = tl.load(do_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            if GATE:
                x2 = tl.load(x2_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
                x4 = tl.load(x4_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
                if X1_LR:
                    x1 = x1l
                    z = zl
                else:
                    x1 = tl.load(x1_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
                    z = zl + tl.dot(tl.load(wg_ptr + gmat), x1, input_precision=PREC)
                if X3_LR:
                    x3 = x3l
                    att = mx3l + x4
                else:
                    x3 = tl.load(x3_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
                    att = (tl.dot(tl.load(mat + sq), x3, input_precision=PREC)
                           + cvec[:, None] + x4)
                    z += tl.dot(tl.load(wg_ptr + 2 * NG * C_PAD + gmat), x3, input_precision=PREC)
                z += tl.dot(tl.load(wg_ptr + NG * C_PAD + gmat), x2, input_precision=PREC)
                z += tl.dot(tl.load(wg_ptr + 3 * NG * C_PAD + gmat), att, input_precision=PREC)
                g = tl.sigmoid(z)
                dg = tl.where(rg[:, None] == 0, tl.sum(dout * x1, 0)[None, :],
                     tl.where(rg[:, None] == 1, tl.sum(dout * x2, 0)[None, :],
                     tl.where(rg[:, None] == 2, tl.sum(dout * x3, 0)[None, :],
                     tl.where(rg[:, None] == 3, tl.sum(dout * att, 0)[None, :], 0.0))))
                dz = tl.where(lm[None, :], dg * g * (1.0 - g), 0.0)
                g0 = tl.sum(tl.where(rg[:, None] == 0, g, 0.0), 0)
                g1 = tl.sum(tl.where(rg[:, None] == 1, g, 0.0), 0)
                g2 = tl.sum(tl.where(rg[:, None] == 2, g, 0.0), 0)
                g3 = tl.sum(tl.where(rg[:, None] == 3, g, 0.0), 0)
                d_att = (g3[None, :] * dout
                         + tl.dot(tl.load(wgt_ptr + 3 * NG * C_PAD + gmatt), dz, input_precision=PREC))
                aw2 += tl.dot(dz, tl.trans(x2), input_precision=PREC)
                aw4 += tl.dot(dz, tl.trans(att), input_precision=PREC)
                abg += tl.sum(dz, 1)
                pdz += dz
                if not X1_LR:
                    aw1 += tl.dot(dz, tl.trans(x1), input_precision=PREC)
                if X3_LR:
                    acc3 += g2[None, :] * dout
                    accd += d_att
                else:
                    aw3 += tl.dot(dz, tl.trans(x3), input_precision=PREC)
                    dx3 = (g2[None, :] * dout
                           + tl.dot(tl.load(wgt_ptr + 2 * NG * C_PAD + gmatt), dz, input_precision=PREC)
                           + tl.dot(tl.load(matt + sq), d_att, input_precision=PREC))
                    tl.store(dx3_ptr + offs, dx3.to(dx3_ptr.dtype.element_ty), mask=cmask)
                if QK:
                    gd = gd_ptr + pid_b * 6 * N + p
                    tl.store(gd, g0, mask=lm)
                    tl.store(gd + N, g1, mask=lm)
                    tl.store(gd + (2 + rg[:, None]) * N, dz, mask=(rg < 4)[:, None] & lm[None, :])
                else:
                    dx2 = (g1[None, :] * dout
                           + tl.dot(tl.load(wgt_ptr + NG * C_PAD + gmatt), dz, input_precision=PREC))
                    tl.store(dx2_ptr + offs, dx2.to(dx2_ptr.dtype.element_ty), mask=cmask)
                    if X1_LR:
                        acc1 += g0[None, :] * dout
                    else:
                        dx1 = (g0[None, :] * dout
                               + tl.dot(tl.load(wgt_ptr + gmatt), dz, input_precision=PREC))
                        tl.store(dx1_ptr + offs, dx1.to(dx1_ptr.dtype.element_ty), mask=cmask)
            else:
                d_att = dout
                if X3_LR:
                    accd += d_att
                else:
                    dx3 = tl.dot(tl.load(matt + sq), d_att, input_precision=PREC)
                    tl.store(dx3_ptr + offs, dx3.to(dx3_ptr.dtype.element_ty), mask=cmask)
            tl.store(dx4_ptr + offs, d_att.to(dx4_ptr.dtype.element_ty), mask=cmask)
        if X3_LR:
            dx3 = tl.dot(tl.load(matt + sq), accd, input_precision=PREC)
            if GATE:
                dx3 += acc3 + tl.dot(tl.load(wgt_ptr + 2 * NG * C_PAD + gmatt), pdz,
                                     input_precision=PREC)
                aw3 += tl.dot(pdz, tl.trans(x3l), input_precision=PREC)
            tl.store(dx3_ptr + lr_off, dx3.to(dx3_ptr.dtype.element_ty), mask=cmask)
        if GATE:
            if X1_LR:
                aw1 += tl.dot(pdz, tl.trans(x1l), input_precision=PREC)
                if not QK:
                    dx1 = acc1 + tl.dot(tl.load(wgt_ptr + gmatt), pdz, input_precision=PREC)
                    tl.store(dx1_ptr + lr_off, dx1.to(dx1_ptr.dtype.element_ty), mask=cmask)
    if GATE:
        part = pid_b * n_split + pid_s
        wout = dwg_ptr + part * 4 * NG * C_PAD + gmat
        tl.store(wout, aw1)
        tl.store(wout + NG * C_PAD, aw2)
        tl.store(wout + 2 * NG * C_PAD, aw3)
        tl.store(wout + 3 * NG * C_PAD, aw4)
        tl.store(dbg_ptr + part * NG + rg, abg)


@triton.jit
def _apply_bwd2_kernel(x1_ptr, x2_ptr, do_ptr, gd_ptr, wgt_ptr,
                       e12_ptr, e12t_ptr, e11_ptr, e22_ptr, e1_ptr, e2_ptr, dx1_ptr, dx2_ptr,
                       C, H, W, S,
                       X1_LR: tl.constexpr, GATE: tl.constexpr, NORMALIZED: tl.constexpr,
                       C_PAD: tl.constexpr, BLOCK_L: tl.constexpr, PREC: tl.constexpr):
    """dx1 = [g0 dout + Wg1ᵀ dz] + E12 x2 + E11 x1 + e1, dx2 = [g1 dout + Wg2ᵀ dz] + E12ᵀ x1
    + E22 x2 + e2 (E11 = E22 = 0 unless NORMALIZED), dx1 pooled over S×S when x1 is at LR."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(1)
    N = H * W
    w = W // S
    L = (H // S) * w
    l = pid_t * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = l < L
    ly = l // w
    lx = l % w
    rc = tl.arange(0, C_PAD)
    rc64 = rc.to(tl.int64)
    rg = tl.arange(0, NG)
    sq = rc[:, None] * C_PAD + rc[None, :]               # a padded (C_PAD, C_PAD) matrix
    cmask = (rc < C)[:, None] & lm[None, :]
    hr_base = pid_b * C * N + rc64[:, None] * N
    lr_off = pid_b * C * L + rc64[:, None] * L + l[None, :]
    sm = pid_b * C_PAD * C_PAD
    gmatt = rc[:, None] * NG + rg[None, :]
    e1 = tl.load(e1_ptr + pid_b * C_PAD + rc)
    e2 = tl.load(e2_ptr + pid_b * C_PAD + rc)
    if X1_LR:
        x1l = tl.load(x1_ptr + lr_off, mask=cmask, other=0.0).to(tl.float32)
        t21 = tl.dot(tl.load(e12t_ptr + sm + sq), x1l, input_precision=PREC) + e2[:, None]
        accx2 = tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
        if GATE:
            acc1 = tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
            pdz = tl.zeros([NG, BLOCK_L], dtype=tl.float32)
    for t in range(0, S * S):
        p = (ly * S + t // S) * W + lx * S + t % S
        offs = hr_base + p[None, :]
        x2 = tl.load(x2_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
        if X1_LR:
            dx2 = t21
        else:
            x1 = tl.load(x1_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            dx2 = tl.dot(tl.load(e12t_ptr + sm + sq), x1, input_precision=PREC) + e2[:, None]
            dx1 = tl.dot(tl.load(e12_ptr + sm + sq), x2, input_precision=PREC) + e1[:, None]
            if NORMALIZED:
                dx1 += tl.dot(tl.load(e11_ptr + sm + sq), x1, input_precision=PREC)
        if NORMALIZED:
            dx2 += tl.dot(tl.load(e22_ptr + sm + sq), x2, input_precision=PREC)
        if GATE:
            dout = tl.load(do_ptr + offs, mask=cmask, other=0.0).to(tl.float32)
            gd = gd_ptr + pid_b * 6 * N + p
            g0 = tl.load(gd, mask=lm, other=0.0)
            g1 = tl.load(gd + N, mask=lm, other=0.0)
            dz = tl.load(gd + (2 + rg[:, None]) * N, mask=(rg < 4)[:, None] & lm[None, :], other=0.0)
            dx2 += g1[None, :] * dout + tl.dot(tl.load(wgt_ptr + NG * C_PAD + gmatt), dz,
                                               input_precision=PREC)
            if X1_LR:
                acc1 += g0[None, :] * dout
                pdz += dz
            else:
                dx1 += g0[None, :] * dout + tl.dot(tl.load(wgt_ptr + gmatt), dz, input_precision=PREC)
        tl.store(dx2_ptr + offs, dx2.to(dx2_ptr.dtype.element_ty), mask=cmask)
        if X1_LR:
            accx2 += x2
        else:
            tl.store(dx1_ptr + offs, dx1.to(dx1_ptr.dtype.element_ty), mask=cmask)
    if X1_LR:
        own = e1[:, None] + tl.zeros([C_PAD, BLOCK_L], dtype=tl.float32)
        if NORMALIZED:
            own += tl.dot(tl.load(e11_ptr + sm + sq), x1l, input_precision=PREC)
        dx1 = tl.dot(tl.load(e12_ptr + sm + sq), accx2, input_precision=PREC) + (S * S) * own
        if GATE:
            dx1 += acc1 + tl.dot(tl.load(wgt_ptr + gmatt), pdz, input_precision=PREC)
        tl.store(dx1_ptr + lr_off, dx1.to(dx1_ptr.dtype.element_ty), mask=cmask)


# ------------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------------
def _empty(shape, dtype, device) -> torch.Tensor:
    """Every buffer a kernel writes comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _cpad(C: int) -> int:
    return max(16, triton.next_power_of_2(C))


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


# Under TRITON_INTERPRET=1 every tl op costs about a millisecond of Python whatever its size, so the
# interpreter gets larger tiles (the same code paths); tests shrink them (monkeypatch) to exercise
# the multi-tile loops and the split-N partial sums on tiny shapes.
INTERPRETER = {"BLOCK_P": 256, "BLOCK_L": 128, "programs": 3}


def _interpreting(device: torch.device) -> bool:
    return device.type != "cuda"


def _programs(device: torch.device) -> int:
    """How many programs a split-N reduction aims for (a few under the interpreter)."""
    if _interpreting(device):
        return INTERPRETER["programs"]
    # two waves of programs: enough to fill the GPU, few (C, C) float32 partials to sum after
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count


def _blocks(C_PAD: int, device: torch.device):
    """(BLOCK_P, BLOCK_L, num_warps): pixels per Gram tile, coarse pixels per apply tile, warps.
    On a GPU a (C_PAD, BLOCK) float32 tile stays at ≤ 16 registers per thread."""
    if _interpreting(device):
        return INTERPRETER["BLOCK_P"], INTERPRETER["BLOCK_L"], 4
    if C_PAD >= 128:
        return 32, 32, 8
    return (64, 64, 4) if C_PAD <= 32 else (64, 32, 4)


def _split(n_tiles: int, B: int, device) -> tuple:
    n_split = max(1, min(n_tiles, triton.cdiv(_programs(device), B)))
    per = triton.cdiv(n_tiles, n_split)
    return triton.cdiv(n_tiles, per), per


def gram(a, b, up_a: int, ma=None, mb=None):
    """Σ_p (a_{p//up_a} − ma)(b_p − mb)ᵀ (B, C, C), Σ_p (a − ma), Σ_p (b − mb), float32.

    a: (B, C, H/up_a, W/up_a), b: (B, C, H, W), contiguous; ma, mb: (B, C) float32 or None."""
    B, C, H, W = b.shape
    C_PAD = _cpad(C)
    BLOCK_P, _, warps = _blocks(C_PAD, b.device)
    n_split, per = _split(triton.cdiv(H * W, BLOCK_P), B, b.device)
    part = _empty((B, n_split, C, C), torch.float32, b.device)
    sa = _empty((B, n_split, C), torch.float32, b.device)
    sb = _empty((B, n_split, C), torch.float32, b.device)
    centre = ma is not None
    dummy = part if not centre else None
    _gram_kernel[(B, n_split)](
        a, b, ma if centre else dummy, mb if centre else dummy, part, sa, sb,
        C, H, W, up_a, per, CENTRE=centre, C_PAD=C_PAD, BLOCK_P=BLOCK_P,
        PREC=_prec(b.dtype), num_warps=warps)
    return part.sum(1), sa.sum(1), sb.sum(1)


def pass1(x1, x2, w: Weights, attention: str, up1: int):
    """(gram, proj, vecs) of :mod:`csa_small`, with the Gram kernel."""
    B, C = x2.shape[:2]
    if attention == "paper":
        G, s1, s2 = gram(x1, x2, up1)
        return G, x2.new_empty(stats_shapes(B, C, w.wq.shape[0], attention)[1],
                               dtype=torch.float32), torch.stack([s1, s2], 1)
    if attention == "normalized":
        m1, m2 = x1.mean((2, 3), dtype=torch.float32), x2.mean((2, 3), dtype=torch.float32)
        Gc, _, _ = gram(x1, x2, up1, m1, m2)
        G11, _, _ = gram(x1, x1, 1, m1, m1)
        G22, _, _ = gram(x2, x2, 1, m2, m2)
        proj = torch.stack([w.wq @ (G11 * up1 ** 2), w.wk @ G22], 1)
        return Gc, proj, torch.stack([m1, m2], 1)
    return (x2.new_empty(s, dtype=torch.float32) for s in stats_shapes(B, C, w.wq.shape[0], attention))


def _padm(m: torch.Tensor, C_PAD: int) -> torch.Tensor:
    """(B, C, C) or (B, C) -> zero-padded float32 (B, C_PAD, C_PAD) / (B, C_PAD), contiguous."""
    out = m.new_zeros((m.shape[0],) + (C_PAD,) * (m.dim() - 1), dtype=torch.float32)
    out[(slice(None),) + tuple(slice(0, s) for s in m.shape[1:])] = m
    return out


def _gate_mats(wg, bg, C: int, C_PAD: int, device):
    """wg (4, 4C) -> (4, 16, C_PAD) blocks Wg_k and their transposes (4, C_PAD, 16); bg -> (16,)."""
    wgp = torch.zeros((4, NG, C_PAD), dtype=torch.float32, device=device)
    bgp = torch.zeros((NG,), dtype=torch.float32, device=device)
    if wg is not None:
        wgp[:, :4, :C] = wg.float().view(4, 4, C).transpose(0, 1)
        bgp[:4] = bg.float()
    return wgp, wgp.transpose(1, 2).contiguous(), bgp


def _check_dtype(x2):
    if x2.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x2: the triton backend expects float32, float16 or bfloat16, got "
                         f"{x2.dtype} (use backend='torch')")


def forward(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
            heads: int, attention: str, up1: int, up3: int):
    """(out, gram, proj, vecs), as :func:`csa_torch.forward`."""
    _check_dtype(x2)
    x1, x2, x3, x4 = (t.contiguous() for t in (x1, x2, x3, x4))
    B, C, H, W = x2.shape
    w = Weights.of(torch.float32, wq, bq, wk, bk, wv, bv, wo, bo, temperature)
    gram_, proj, vecs = pass1(x1, x2, w, attention, up1)
    small = csa_small.forward(w, gram_, proj, vecs, heads, attention, H * W)
    C_PAD = _cpad(C)
    _, BLOCK_L, warps = _blocks(C_PAD, x2.device)
    x1c, x3c, S, _, _ = common_factor(x1, x3, up1, up3)
    wgp, _, bgp = _gate_mats(wg, bg, C, C_PAD, x2.device)
    out = _empty(x2.shape, x2.dtype, x2.device)
    L = (H // S) * (W // S)
    _apply_fwd_kernel[(B, triton.cdiv(L, BLOCK_L))](
        x1c, x2, x3c, x4, _padm(small.M, C_PAD), _padm(small.c, C_PAD), wgp, bgp, out,
        C, H, W, S, X1_LR=x1c.shape[2] != H, X3_LR=x3c.shape[2] != H, GATE=wg is not None,
        C_PAD=C_PAD, BLOCK_L=BLOCK_L, PREC=_prec(x2.dtype), num_warps=warps)
    return out, gram_, proj, vecs


def backward(dout, x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
             gram_, proj, vecs, heads: int, attention: str, up1: int, up3: int):
    """Gradients in the order of :func:`csa_torch.backward`."""
    _check_dtype(x2)
    x1, x2, x3, x4, dout = (t.contiguous() for t in (x1, x2, x3, x4, dout))
    B, C, H, W = x2.shape
    N, dev, dt = H * W, x2.device, x2.dtype
    w = Weights.of(torch.float32, wq, bq, wk, bk, wv, bv, wo, bo, temperature)
    small = csa_small.forward(w, gram_, proj, vecs, heads, attention, N)
    C_PAD = _cpad(C)
    _, BLOCK_L, warps = _blocks(C_PAD, x2.device)
    prec = _prec(dt)
    gate, qk = wg is not None, attention != "legacy"
    x1c, x3c, S, f1, f3 = common_factor(x1, x3, up1, up3)
    X1_LR, X3_LR = x1c.shape[2] != H, x3c.shape[2] != H
    wgp, wgt, bgp = _gate_mats(wg, bg, C, C_PAD, dev)
    M = small.M.contiguous()
    L = (H // S) * (W // S)
    n_split, per = _split(triton.cdiv(L, BLOCK_L), B, dev)
    dx4 = _empty(x4.shape, dt, dev)
    dx3c = _empty(x3c.shape, dt, dev)
    if qk or gate:
        dx1c, dx2 = _empty(x1c.shape, dt, dev), _empty(x2.shape, dt, dev)
    else:  # legacy without the gate: x1 and x2 do not reach the output
        dx1c, dx2 = torch.zeros_like(x1c), torch.zeros_like(x2)
    gd = _empty((B, 6, N), torch.float32, dev) if (qk and gate) else dx4
    dwg_part = _empty((B, n_split, 4, NG, C_PAD), torch.float32, dev) if gate else dx4
    dbg_part = _empty((B, n_split, NG), torch.float32, dev) if gate else dx4
    _apply_bwd1_kernel[(B, n_split)](
        x1c, x2, x3c, x4, dout, _padm(M, C_PAD), _padm(M.transpose(1, 2), C_PAD),
        _padm(small.c, C_PAD), wgp, wgt, bgp,
        dx1c, dx2, dx3c, dx4, gd, dwg_part, dbg_part,
        C, H, W, S, per, X1_LR=X1_LR, X3_LR=X3_LR, GATE=gate, QK=qk,
        C_PAD=C_PAD, BLOCK_L=BLOCK_L, PREC=prec, num_warps=warps)
    # dM = Σ_p d_att_p x3_pᵀ = (Σ_p x3_{p//up3} dx4_pᵀ)ᵀ, dc = Σ_p d_att_p
    G3, _, dc = gram(x3, dx4, up3)
    gr = csa_small.backward(G3.transpose(1, 2), dc, w, small, gram_, proj, vecs, heads, attention)
    if qk:
        z = torch.zeros((B, C_PAD, C_PAD), dtype=torch.float32, device=dev)
        norm = attention == "normalized"
        _apply_bwd2_kernel[(B, triton.cdiv(L, BLOCK_L))](
            x1c, x2, dout, gd, wgt, _padm(gr.E12, C_PAD), _padm(gr.E12.transpose(1, 2), C_PAD),
            _padm(gr.E11, C_PAD) if norm else z, _padm(gr.E22, C_PAD) if norm else z,
            _padm(gr.e1, C_PAD), _padm(gr.e2, C_PAD), dx1c, dx2,
            C, H, W, S, X1_LR=X1_LR, GATE=gate, NORMALIZED=norm,
            C_PAD=C_PAD, BLOCK_L=BLOCK_L, PREC=prec, num_warps=warps)
    dwg = dwg_part.sum((0, 1))[:, :4, :C].transpose(0, 1).reshape(4, 4 * C) if gate else None
    dbg = dbg_part.sum((0, 1))[:4] if gate else None
    return csa_op.backward_result(sum_pool(dx1c, f1), dx2, sum_pool(dx3c, f3), dx4, gr, dwg, dbg,
                                  wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature)


csa_op.register_impl("triton", forward, backward)


@register("csa", "triton")
def csa_triton(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
               heads: int, attention: str, up1: int = 1, up3: int = 1) -> torch.Tensor:
    """The fused CSA through ``csakd::csa_fwd`` with the Triton kernels (float64 calls run the
    torch backend: the kernels are float32/float16/bfloat16)."""
    backend = "torch" if x2.dtype == torch.float64 else "triton"
    return csa_op.csa(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
                      heads, attention, up1, up3, backend)
