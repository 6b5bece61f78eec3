"""The Triton kernels of the fused CSA (launched by :mod:`impl_triton`, which documents them).

Tokens are the channels, the pixel axis is tiled: every kernel holds a (C_PAD, pixels) tile,
C_PAD = the next power of two ≥ max(C, 16), channels beyond C masked to zero; all accumulate in
float32 and load float32, float16 or bfloat16, converted to float32 in the kernel.
"""
import triton
import triton.language as tl

NG = 16  # the 4 gate rows, zero-padded to the smallest tl.dot size


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


# one kernel, not split: the gate backward and dx3 share registers across the S×S loop (a split
# would reload x1..x4 and recompute att and the gate per part)
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
