"""Backend "triton" of the fused CSA: Triton kernels (:mod:`triton_kernels`) for both pixel passes,
forward and backward, and their launchers (grid, tile sizes, split-N partials).

The algorithm is docs/design.md, "The fused CSA" (and :mod:`impl_torch`, which states the
formulas); the small per-sample algebra between the passes is :mod:`algebra` (a few tiny torch
ops). Tokens are the channels, the pixel axis is tiled ("spectral-token tiling"): every kernel
holds a (C_PAD, pixels) tile, C_PAD = the next power of two ≥ max(C, 16), channels beyond C
masked to zero.

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
index product (batch × C × N) can pass 2³¹. float64 is not a Triton path (the backend declares
float32, float16, bfloat16; ``backend="auto"`` picks the torch backend for float64).

Tile sizes are powers of two, dots are ≥ 16 in every dimension, every ragged edge is masked; the
block sizes are defaults chosen by register count, not by GPU timing (benchmarks/RESULTS.md has
what the GPUs measured).
"""
from __future__ import annotations

import torch
import triton

from ... import _platform, backends
from ..pixels import common_factor, sum_pool
from . import algebra
from .algebra import stats_shapes
from .op import CSASpec, CSAStats, CSAWeights, fused_call, gradients
from .triton_kernels import (NG, _apply_bwd1_kernel, _apply_bwd2_kernel, _apply_fwd_kernel,
                             _gram_kernel)


def _cpad(C: int) -> int:
    return max(16, triton.next_power_of_2(C))


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


# Under TRITON_INTERPRET=1 every tl op costs about a millisecond of Python whatever its size, so the
# interpreter gets larger tiles (the same code paths); tests shrink them to exercise the
# multi-tile loops and the split-N partial sums on tiny shapes.
INTERPRETER = {"BLOCK_P": 256, "BLOCK_L": 128, "programs": 3}


def _programs(device: torch.device) -> int:
    """How many programs a split-N reduction aims for (a few under the interpreter)."""
    if _platform.triton_interpreter():
        return INTERPRETER["programs"]
    # two waves of programs: enough to fill the GPU, few (C, C) float32 partials to sum after
    return 2 * torch.cuda.get_device_properties(device).multi_processor_count


def _blocks(C_PAD: int, device: torch.device):
    """(BLOCK_P, BLOCK_L, num_warps): pixels per Gram tile, coarse pixels per apply tile, warps.
    On a GPU a (C_PAD, BLOCK) float32 tile stays at ≤ 16 registers per thread."""
    if _platform.triton_interpreter():
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
    part = torch.empty((B, n_split, C, C), dtype=torch.float32, device=b.device)
    sa = torch.empty((B, n_split, C), dtype=torch.float32, device=b.device)
    sb = torch.empty((B, n_split, C), dtype=torch.float32, device=b.device)
    centre = ma is not None
    dummy = part if not centre else None
    _gram_kernel[(B, n_split)](
        a, b, ma if centre else dummy, mb if centre else dummy, part, sa, sb,
        C, H, W, up_a, per, CENTRE=centre, C_PAD=C_PAD, BLOCK_P=BLOCK_P,
        PREC=_prec(b.dtype), num_warps=warps)
    return part.sum(1), sa.sum(1), sb.sum(1)


def pass1(x1, x2, w: CSAWeights, attention: str, up1: int) -> CSAStats:
    """(gram, proj, vecs) of :mod:`algebra`, with the Gram kernel."""
    B, C = x2.shape[:2]
    if attention == "paper":
        G, s1, s2 = gram(x1, x2, up1)
        return CSAStats(G, x2.new_empty(stats_shapes(B, C, w.wq.shape[0], attention)[1],
                                        dtype=torch.float32), torch.stack([s1, s2], 1))
    if attention == "normalized":
        m1, m2 = x1.mean((2, 3), dtype=torch.float32), x2.mean((2, 3), dtype=torch.float32)
        Gc, _, _ = gram(x1, x2, up1, m1, m2)
        G11, _, _ = gram(x1, x1, 1, m1, m1)
        G22, _, _ = gram(x2, x2, 1, m2, m2)
        proj = torch.stack([w.wq @ (G11 * up1 ** 2), w.wk @ G22], 1)
        return CSAStats(Gc, proj, torch.stack([m1, m2], 1))
    return CSAStats(*(x2.new_empty(s, dtype=torch.float32)
                      for s in stats_shapes(B, C, w.wq.shape[0], attention)))


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


def forward(x1, x2, x3, x4, w: CSAWeights, spec: CSASpec):
    """(out, stats), as :func:`impl_torch.forward`."""
    x1, x2, x3, x4 = (t.contiguous() for t in (x1, x2, x3, x4))
    B, C, H, W = x2.shape
    heads, attention, up1, up3 = spec
    wg, bg = w.wg, w.bg
    wc = w.to(torch.float32)
    stats = pass1(x1, x2, wc, attention, up1)
    small = algebra.forward(wc, *stats, heads, attention, H * W)
    C_PAD = _cpad(C)
    _, BLOCK_L, warps = _blocks(C_PAD, x2.device)
    x1c, x3c, S, _, _ = common_factor(x1, x3, up1, up3)
    wgp, _, bgp = _gate_mats(wg, bg, C, C_PAD, x2.device)
    out = torch.empty(x2.shape, dtype=x2.dtype, device=x2.device)
    L = (H // S) * (W // S)
    _apply_fwd_kernel[(B, triton.cdiv(L, BLOCK_L))](
        x1c, x2, x3c, x4, _padm(small.M, C_PAD), _padm(small.c, C_PAD), wgp, bgp, out,
        C, H, W, S, X1_LR=x1c.shape[2] != H, X3_LR=x3c.shape[2] != H, GATE=wg is not None,
        C_PAD=C_PAD, BLOCK_L=BLOCK_L, PREC=_prec(x2.dtype), num_warps=warps)
    return out, stats


def backward(dout, x1, x2, x3, x4, w: CSAWeights, stats: CSAStats, spec: CSASpec):
    """Gradients in the order of :func:`impl_torch.backward`."""
    x1, x2, x3, x4, dout = (t.contiguous() for t in (x1, x2, x3, x4, dout))
    B, C, H, W = x2.shape
    N, dev, dt = H * W, x2.device, x2.dtype
    heads, attention, up1, up3 = spec
    wg, bg = w.wg, w.bg
    wc = w.to(torch.float32)
    small = algebra.forward(wc, *stats, heads, attention, N)
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
    new = lambda shape, dtype=dt: torch.empty(shape, dtype=dtype, device=dev)  # noqa: E731
    dx4, dx3c = new(x4.shape), new(x3c.shape)
    if qk or gate:
        dx1c, dx2 = new(x1c.shape), new(x2.shape)
    else:  # legacy without the gate: x1 and x2 do not reach the output
        dx1c, dx2 = torch.zeros_like(x1c), torch.zeros_like(x2)
    f32 = torch.float32
    gd = new((B, 6, N), f32) if (qk and gate) else dx4
    dwg_part = new((B, n_split, 4, NG, C_PAD), f32) if gate else dx4
    dbg_part = new((B, n_split, NG), f32) if gate else dx4
    _apply_bwd1_kernel[(B, n_split)](
        x1c, x2, x3c, x4, dout, _padm(M, C_PAD), _padm(M.transpose(1, 2), C_PAD),
        _padm(small.c, C_PAD), wgp, wgt, bgp,
        dx1c, dx2, dx3c, dx4, gd, dwg_part, dbg_part,
        C, H, W, S, per, X1_LR=X1_LR, X3_LR=X3_LR, GATE=gate, QK=qk,
        C_PAD=C_PAD, BLOCK_L=BLOCK_L, PREC=prec, num_warps=warps)
    # dM = Σ_p d_att_p x3_pᵀ = (Σ_p x3_{p//up3} dx4_pᵀ)ᵀ, dc = Σ_p d_att_p
    G3, _, dc = gram(x3, dx4, up3)
    gr = algebra.backward(G3.transpose(1, 2), dc, wc, small, *stats, heads, attention)
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
    return gradients(sum_pool(dx1c, f1), dx2, sum_pool(dx3c, f3), dx4, gr, dwg, dbg, w)


IMPL = backends.Impl("csa", "triton", fused_call("triton"), forward=forward, backward=backward,
                     devices=("cuda", "cpu"), dtypes=(torch.float32, torch.float16, torch.bfloat16),
                     ready=_platform.triton_unavailable)
