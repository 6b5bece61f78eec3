"""CLRA block, ``backend="triton"``: implicit-GEMM 3×3 convolutions with fused epilogues.

Same block and growth buffers as :mod:`impl_torch` (:mod:`csakd_fast.ops.clra.op` has the
formula). Every forward conv is one launch of :func:`_conv3x3_kernel`, an implicit GEMM

    out[p, n] = epilogue( Σ_{tap, c} in[b(p), c, h(p) + dy(tap), w(p) + dx(tap)] · W[n, c, tap] + bias[n] )

with M = B·H·W pixels, N = C_out, K = 9·C_in (taps × input channels, zero padding by masks) on
``tl.dot`` with fp32 accumulation. The epilogue adds the bias and then

- ``EPI_LRELU``  (c1..c4): LeakyReLU(0.2), stored into the conv's gc-channel slice of the buffer;
- ``EPI_RES``    (c5 of dense blocks 1, 2): 0.2·acc + u, stored into the next buffer's u slot;
- ``EPI_RES2``   (c5 of dense block 3): 0.2·(0.2·acc + u) + x, the block's output y.

Grouped convs (groups g, C_in/g = cin_g, C_out/g = cout_g): a tile of BLOCK_N output channels
covers the groups ⌊n0/cout_g⌋ … ⌊n1/cout_g⌋, so K runs only over their input channels
[g0·cin_g, (g1 + 1)·cin_g) and the weight tile is block-diagonal (zero where a channel is not in
the column's group). For groups = 1 this is the dense conv. The groups split the buffer *prefix*
the conv reads, so a group may straddle the u / x1 boundary, as with the reference's torch.cat.
Output channels per group are small in the student (1 or 2 for groups = 43): the block-diagonal
tile wastes MACs there (those convs run at LR and are cheap) but keeps one kernel and tl.dot.

**Layout: NCHW.** (1) The model is NCHW end to end, so the block needs no layout conversion at
its boundaries. (2) A channel prefix of an NCHW buffer is one contiguous range per sample (for
B = 1 a contiguous tensor), so the backward, which runs through aten (cuDNN / oneDNN
``convolution_backward``, shared with the torch backend), reads the saved buffers as they are; in
NHWC every prefix is pixel-strided (stride nf + 4·gc, not the prefix width), and cuDNN would get
a ``contiguous()`` copy of it for every conv in backward (≈ 25–50 % of a bf16 dgrad + wgrad's
time by byte/flop count). (3) The implicit GEMM's A tile [pixels × channels] is contiguous along
the pixels of an image row: the pixel tile is BH rows × BW columns of one image, so the
alignment analysis sees contiguous, 16-byte-aligned rows. The price, and the case for NHWC: the
taps' ±1 column shifts make 2 of 3 loads misaligned for 16-bit types, which neither cp.async
(≥ 4 bytes) nor TMA (Triton requires a 16-byte-aligned innermost block offset) can move; with
``SPLIT_DX`` the dx = 0 loads are pipelined cp.async copies and the others plain loads. In NHWC
every tap moves whole pixels (aligned, TMA-able) — worth measuring with a Triton backward on
NHWC buffers, not with aten's. Weights are repacked per call to (3, 3, cin_g, C_out) so the
[BLOCK_K × BLOCK_N] weight tile is contiguous along N. ``tools/triton_report.py`` (``make
reports``) compiles every autotuning candidate for sm_90 without a GPU: kernels/TRITON_REPORT.md.

**Backward** walks the torch path (:func:`impl_torch.clra_backward`: LeakyReLU' from the stored
sign, one gradient buffer G per dense block, weight and bias gradients by aten
``convolution_backward``); with ``recompute`` the buffers are rebuilt with these Triton forward
kernels. The convs' input gradients ("dgrad") have two implementations, chosen by ``DGRAD``
(environment ``CSAKD_CLRA_DGRAD``, or :class:`dgrad_mode` around forward *and* backward; read
when backward runs):

- ``"aten"`` (default): cuDNN / oneDNN computes dL/d(prefix) into a new tensor, then it is added
  onto G's prefix;
- ``"triton"``: :func:`conv3x3_dgrad`, the same kernel on dL/dconv with flipped taps and the
  channel roles swapped per group (:func:`pack_dgrad_weight`), its epilogue ``EPI_ACC`` adding into
  G's prefix in place: no input-gradient tensor, no separate add. Per conv that saves writing and
  re-reading a prefix-sized tensor (bf16, B = 8, 256², the widest prefix nf + 3·gc = 215
  channels: 2 × 225 MB, ≈ 0.13 ms at 3.35 TB/s) against a dgrad of 2·B·H·W·9·cin·gc ≈ 87 GFLOP
  (≈ 0.1–0.15 ms on an H100's tensor cores): the same order as the dgrad itself.

The default is ``"aten"``; the benchmark harness times both (its ``clra_dgrad`` case on a GPU:
``benchmarks/gpu_check_clra.sh``), and benchmarks/RESULTS.md has what was measured.

Precision: fp32 inputs use ``input_precision="tf32"`` when ``torch.backends.cudnn.allow_tf32``
(what the reference's cuDNN conv does then) and "ieee" otherwise; bf16/fp16 operands go to the
tensor cores as they are, accumulation is fp32, the epilogue rounds once.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ... import _checks, _platform, backends
from .impl_torch import clra_backward
from .op import RES, SLOPE, dims, fused_call

EPI_LRELU, EPI_RES, EPI_RES2, EPI_STORE, EPI_ACC = 0, 1, 2, 3, 4
DGRAD_MODES = ("aten", "triton")
# which implementation computes the convs' input gradients in the triton backend's backward (the
# weight and bias gradients are aten's either way); CSAKD_CLRA_DGRAD overrides, dgrad_mode()
# switches it for a block of code (the benchmarks compare both)
DGRAD = os.environ.get("CSAKD_CLRA_DGRAD", "aten")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# one kernel, not split: the K loop and the epilogues share the accumulator tile in registers
@triton.jit
def _conv3x3_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, res_ptr, res2_ptr,
    H, W, cout, cin_g, cout_g,
    sx_b, sx_c, so_b, so_c, sr_b, sr_c, sr2_b, sr2_c,
    EPILOGUE: tl.constexpr, SLOPE_C: tl.constexpr, RES_C: tl.constexpr,
    GROUPED: tl.constexpr, IDX64: tl.constexpr, W_POW2: tl.constexpr, SPLIT_DX: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One [BLOCK_M pixels × BLOCK_N output channels] tile of a 3×3 conv (padding 1, stride 1).

    x: (B, ≥cin, H, W) with plane strides (W, 1), channel stride sx_c, batch stride sx_b;
    w: (3, 3, cin_g, cout) contiguous; out/res/res2: (B, cout, H, W) views, plane strides (W, 1).
    The pixel tile is BH rows × BW columns of one image (BW = min(BLOCK_M, W rounded up to a
    power of two)), so pixel offsets are provably contiguous along a row (vector loads and
    stores). Offsets inside an image are int32 unless ``IDX64`` (C·H·W ≥ 2^31); the image's
    base is an int64 scalar."""
    BW: tl.constexpr = BLOCK_M if BLOCK_M < W_POW2 else W_POW2
    BH: tl.constexpr = BLOCK_M // BW
    tiles_w = tl.cdiv(W, BW)
    tiles_h = tl.cdiv(H, BH)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tw = pid_m % tiles_w
    th = (pid_m // tiles_w) % tiles_h
    bimg = (pid_m // (tiles_w * tiles_h)).to(tl.int64)
    r = tl.arange(0, BLOCK_M)
    h = th * BH + r // BW
    w = tw * BW + r % BW
    if IDX64:
        h = h.to(tl.int64)
        w = w.to(tl.int64)
        sx_c = sx_c.to(tl.int64)
        so_c = so_c.to(tl.int64)
        sr_c = sr_c.to(tl.int64)
        sr2_c = sr2_c.to(tl.int64)
    m_ok = (h < H) & (w < W)
    hw = h * W + w
    x_img = x_ptr + bimg * sx_b
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < cout
    # K runs over the input channels of the groups this tile's columns belong to
    n_first = pid_n * BLOCK_N
    n_last = tl.minimum(n_first + BLOCK_N, cout) - 1
    c_lo = (n_first // cout_g) * cin_g
    c_hi = (n_last // cout_g + 1) * cin_g
    n_chunks = tl.cdiv(c_hi - c_lo, BLOCK_K)
    col_c0 = (offs_n // cout_g) * cin_g          # first input channel of each column's group
    w_col = offs_n - col_c0 * cout               # packed-weight offset of (group's channel 0, n)
    offs_kb = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # K = 9·(c_hi − c_lo), walked as pipelinable loops over (tap, channel chunk). SPLIT_DX (16-bit
    # types): one loop per column shift dx, a compile-time constant, so that the dx = 0 loads are
    # provably 16-byte aligned and become cp.async copies (a ±1 shift is misaligned, and cp.async
    # moves ≥ 4 bytes); fp32 is pipelined either way and keeps one loop (fewer registers).
    for part in tl.static_range(3 if SPLIT_DX else 1):
        for it in range(0, (3 if SPLIT_DX else 9) * n_chunks):
            t = it // n_chunks
            c0 = c_lo + (it - t * n_chunks) * BLOCK_K
            if SPLIT_DX:
                dy = t - 1
                dx = part - 1
                tap = t * 3 + part
            else:
                dy = t // 3 - 1
                dx = t % 3 - 1
                tap = t
            hh = h + dy
            ww = w + dx
            pix_ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            offs_k = c0 + offs_kb
            k_ok = offs_k < c_hi
            a = tl.load(x_img + (hw + dy * W + dx)[:, None] + offs_k[None, :] * sx_c,
                        mask=pix_ok[:, None] & k_ok[None, :], other=0.0)
            w_off = (tap * cin_g + offs_k) * cout
            if GROUPED:   # block-diagonal weight tile: zero where k is not in column n's group
                cl = offs_k[:, None] - col_c0[None, :]
                w_ok = (cl >= 0) & (cl < cin_g) & n_ok[None, :]
            else:
                w_ok = k_ok[:, None] & n_ok[None, :]
            wt = tl.load(w_ptr + w_off[:, None] + w_col[None, :], mask=w_ok, other=0.0)
            if DOT_FP32:   # the interpreter mishandles bf16/fp16 dot operands
                a = a.to(tl.float32)
                wt = wt.to(tl.float32)
            acc = tl.dot(a, wt, acc, input_precision=INPUT_PRECISION)
    mask = m_ok[:, None] & n_ok[None, :]
    if EPILOGUE < 3:   # the forward convs; dgrad (3, 4) has no bias
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if EPILOGUE == 0:
        acc = tl.where(acc > 0, acc, acc * SLOPE_C)
    elif EPILOGUE != 3:
        r1 = tl.load(res_ptr + bimg * sr_b + hw[:, None] + offs_n[None, :] * sr_c,
                     mask=mask, other=0.0)
        if EPILOGUE == 4:
            acc = acc + r1.to(tl.float32)
        else:
            acc = acc * RES_C + r1.to(tl.float32)
        if EPILOGUE == 2:
            r2 = tl.load(res2_ptr + bimg * sr2_b + hw[:, None] + offs_n[None, :] * sr2_c,
                         mask=mask, other=0.0)
            acc = acc * RES_C + r2.to(tl.float32)
    tl.store(out_ptr + bimg * so_b + hw[:, None] + offs_n[None, :] * so_c,
             acc.to(out_ptr.dtype.element_ty), mask=mask)


def _gpu_configs() -> List[triton.Config]:
    """Autotuning candidates; each compiles for sm_90 without register spills in every epilogue
    (tests/test_build_tools.py checks the ptxas resource usage)."""
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=wp, num_stages=st)
            for bm, bn, bk, wp, st in [(128, 64, 32, 8, 3), (128, 64, 64, 8, 3), (64, 64, 32, 4, 4),
                                       (128, 32, 32, 4, 4), (256, 32, 32, 8, 3), (64, 32, 64, 4, 3),
                                       (128, 16, 32, 4, 3)]]


_conv3x3_tuned = triton.autotune(_gpu_configs(), key=["H", "W", "cout", "cin_g", "cout_g", "EPILOGUE"])(
    _conv3x3_kernel)
# What the interpreter runs: one fixed, small tile configuration (autotuning there only costs
# time), and which of the code paths a GPU chooses by dtype and size it takes — int64 in-image
# offsets (a GPU takes them past 2^31 elements) and the loop split by column shift (a GPU takes
# it for 16-bit inputs, which the interpreter cannot feed to tl.dot); the tests run both ways.
INTERPRETER = {"config": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, "idx64": True,
               "split_dx": False}


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not _platform.triton_interpreter():
        return "tf32"
    return "ieee"


def pack_weight(w: Tensor) -> Tensor:
    """(cout, cin_g, 3, 3) -> (3, 3, cin_g, cout), the kernel's [K × N] layout."""
    return w.permute(2, 3, 1, 0).contiguous()


def conv3x3(inp: Tensor, cin: int, w_packed: Tensor, bias: Tensor, out: Tensor, groups: int,
            epilogue: int, res: Optional[Tensor] = None, res2: Optional[Tensor] = None) -> Tensor:
    """out = epilogue(conv3x3(inp[:, :cin], W, groups) + bias) written into ``out`` (a view).

    inp (B, ≥cin, H, W), out/res/res2 (B, cout, H, W), all with contiguous H×W planes."""
    B, _, H, W = inp.shape
    cout = out.shape[1]
    for name, t in (("inp", inp), ("out", out), ("res", res), ("res2", res2)):
        if t is not None:
            _checks.planes(name, t)
    res = out if res is None else res
    res2 = res if res2 is None else res2
    wp2 = triton.next_power_of_2(W)
    interp = _platform.triton_interpreter()
    # int32 offsets inside an image unless one image's channels could address past 2^31 elements
    # (the interpreter runs int64 throughout by default: same values, no int32 overflow checks)
    idx64 = (max(t.stride(1) * t.shape[1] for t in (inp, out, res, res2)) >= 2 ** 31
             or (interp and INTERPRETER["idx64"]))
    split_dx = inp.element_size() < 4 or (interp and INTERPRETER["split_dx"])
    consts = dict(EPILOGUE=epilogue, SLOPE_C=SLOPE, RES_C=RES, GROUPED=groups > 1, IDX64=idx64,
                  W_POW2=wp2, SPLIT_DX=split_dx, INPUT_PRECISION=_precision(inp.dtype),
                  DOT_FP32=interp)

    def tiles(block_m):
        bw = min(block_m, wp2)
        return triton.cdiv(H, block_m // bw), triton.cdiv(W, bw)

    args = (inp, w_packed, bias, out, res, res2, H, W, cout, cin // groups, cout // groups,
            inp.stride(0), inp.stride(1), out.stride(0), out.stride(1),
            res.stride(0), res.stride(1), res2.stride(0), res2.stride(1))
    if interp:
        cfg = INTERPRETER["config"]
        grid = (B * math.prod(tiles(cfg["BLOCK_M"])), triton.cdiv(cout, cfg["BLOCK_N"]))
        _conv3x3_kernel[grid](*args, **consts, **cfg)
    else:
        grid = lambda meta: (B * math.prod(tiles(meta["BLOCK_M"])),  # noqa: E731
                             triton.cdiv(cout, meta["BLOCK_N"]))
        _conv3x3_tuned[grid](*args, **consts)
    return out


def pack_dgrad_weight(w: Tensor, groups: int) -> Tensor:
    """(cout, cin_g, 3, 3) -> (3, 3, cout_g, cin): the forward conv's input gradient is a 3×3
    conv of dL/dout with the taps flipped and, within each group, the channel roles swapped, so
    the same kernel computes it with cin_g ↔ cout_g:

        dL/din[c, h, w] = Σ_{n ∈ group(c), ky, kx} dL/dout[n, h + 1 − ky, w + 1 − kx] · W[n, c mod cin_g, ky, kx]
    """
    cout, cin_g = w.shape[:2]
    wg = w.flip(2, 3).reshape(groups, cout // groups, cin_g, 3, 3)
    return wg.permute(3, 4, 1, 0, 2).reshape(3, 3, cout // groups, groups * cin_g).contiguous()


def conv3x3_dgrad(go: Tensor, w: Tensor, groups: int, out: Tensor, accumulate: bool) -> Tensor:
    """out (+)= the input gradient of a 3×3 conv (padding 1, groups) with weight ``w``
    (cout, cin_g, 3, 3) given go = dL/dconv (B, cout, H, W); out (B, cin, H, W), a view with
    contiguous H×W planes (a prefix of the gradient buffer: ``accumulate`` adds in place, so no
    input-gradient tensor and no separate add)."""
    if out.shape[1] != w.shape[1] * groups or go.shape[1] != w.shape[0]:
        raise ValueError(f"out, go: expected {w.shape[1] * groups} and {w.shape[0]} channels for "
                         f"weight {tuple(w.shape)} with groups={groups}, got {out.shape[1]} and "
                         f"{go.shape[1]}")
    packed = pack_dgrad_weight(w, groups)
    return conv3x3(go, go.shape[1], packed, packed, out, groups, EPI_ACC if accumulate else EPI_STORE)


class dgrad_mode:
    """``with dgrad_mode("triton"): ...`` — the input-gradient implementation of the triton
    backend's backward inside the block ("aten": cuDNN / oneDNN ``convolution_backward`` then an
    add into the gradient buffer; "triton": :func:`conv3x3_dgrad` accumulating in place)."""

    def __init__(self, mode: str):
        self.mode = _checks.choice("mode", mode, DGRAD_MODES)

    def __enter__(self):
        global DGRAD
        self.prev, DGRAD = DGRAD, self.mode
        return self

    def __exit__(self, *exc):
        global DGRAD
        DGRAD = self.prev
        return False


def _dgrad_impl():
    _checks.choice("CSAKD_CLRA_DGRAD", DGRAD, DGRAD_MODES)
    return conv3x3_dgrad if DGRAD == "triton" else None


def triton_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], groups: int,
                   keep: bool, final: bool = True) -> Tuple[Optional[Tensor], Tensor]:
    """:func:`impl_torch.torch_forward` with every conv a fused Triton launch."""
    B, _, H, W = x.shape
    nf, gc, C = dims(x, weights)
    x = x.contiguous()
    bufs = x.new_empty((3 if keep else 1, B, C, H, W))
    bufs[0, :, :nf].copy_(x)
    packed = [pack_weight(w) for w in weights]
    biases = [b.contiguous() for b in biases]
    tmp = None if keep else torch.empty_like(x)
    y = None
    for j in range(3):
        U = bufs[j] if keep else bufs[0]
        for k in range(4):
            cin, i = nf + k * gc, 5 * j + k
            conv3x3(U, cin, packed[i], biases[i], U[:, cin:cin + gc], groups, EPI_LRELU)
        if j == 2 and not final:
            break
        i = 5 * j + 4
        if j < 2 and keep:
            conv3x3(U, C, packed[i], biases[i], bufs[j + 1, :, :nf], groups, EPI_RES, res=U[:, :nf])
        elif j < 2:   # one buffer: c5 reads u (halo), so it cannot overwrite u in place
            conv3x3(U, C, packed[i], biases[i], tmp, groups, EPI_RES, res=U[:, :nf])
            U[:, :nf].copy_(tmp)
        else:
            y = torch.empty_like(x)
            conv3x3(U, C, packed[i], biases[i], y, groups, EPI_RES2, res=U[:, :nf], res2=x)
    return y, bufs


def backward(gy: Tensor, x: Tensor, bufs: Tensor, weights: Sequence[Tensor],
             biases: Sequence[Tensor], groups: int, need_gx: bool):
    """The torch backward, its input gradients by aten or (``DGRAD == "triton"``) by
    :func:`conv3x3_dgrad`; a recompute rebuilds the buffers with the Triton forward."""
    return clra_backward(gy, x, bufs, weights, biases, groups, need_gx, triton_forward,
                         dgrad=_dgrad_impl())


IMPL = backends.Impl("clra", "triton", fused_call("triton"), forward=triton_forward,
                     backward=backward, devices=("cuda", "cpu"), dtypes=KERNEL_DTYPES,
                     ready=_platform.triton_unavailable)
