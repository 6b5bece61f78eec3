"""The fused CSA on the native extension (csrc/csa/, kernels/csa/): what "cpp" and "cuda" share.

The algorithm and its split are those of :mod:`impl_torch` (docs/design.md, "The fused CSA"): the
native code runs the pixel passes, the per-sample small algebra (:mod:`algebra`) stays in torch
between the calls.

Forward: ``pass1`` (paper: G = X1 pool(X2)ᵀ and the two sums; normalized: the centred Gram and
G11c, G22c; legacy: nothing) → :func:`algebra.forward` → ``forward`` (att = M x3 + c + x4, the
gate, the gated sum; x1, x3 read at their low resolution).
Backward: :func:`algebra.forward` again (from the saved statistics) → ``backward1`` (dx3, dx4,
the gate's part of dx1, dx2, dM, dc, dWg, dbg, and pool(x2) for the next step) →
:func:`algebra.backward` → ``backward2`` (the q/k-path terms E12, E11, E22, e1, e2 of dx1, dx2;
not for legacy).

Every call goes through :func:`_pointers`, which checks each tensor (device, dtype, shape,
contiguity: :func:`csakd_fast._checks.buffer`) and raises ``ValueError`` naming it before a data
pointer reaches C++. This is the one place where the weights are flat again: the native call.

x1 and x3 may have different nearest factors: the kernels tile at one factor S, as the Triton
backend does (:func:`csakd_fast.ops.pixels.common_factor`).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ... import _checks, _native
from ..pixels import common_factor, sum_pool
from . import algebra
from .algebra import compute_dtype, stats_shapes
from .op import CSASpec, CSAStats, CSAWeights, gradients

Spec = Tuple[str, Optional[torch.Tensor], tuple, torch.dtype]


def _pointers(device: torch.device, specs: Sequence[Spec]) -> list:
    """Data pointers of (name, tensor or None, expected shape, expected dtype); None gives 0."""
    return [0 if t is None else _checks.buffer(name, t, shape, dtype, device).data_ptr()
            for name, t, shape, dtype in specs]


class Native:
    """One native backend: ``name`` ("cpp" | "cuda"), the device type it runs on and the input
    dtypes it takes (dtype -> the extension's dtype code). ``workspace(kind, dims, flag)`` gives
    the float32 elements of scratch a CUDA pass needs (None: the CPU passes keep their own).
    What it supports is declared by its :class:`csakd_fast.backends.Impl` (the op checks it
    before a pass runs); subclasses may narrow :meth:`factor`."""

    def __init__(self, name: str, device_type: str, dtypes: Dict[torch.dtype, int],
                 prefix: str, workspace: Optional[Callable] = None):
        self.name, self.device_type, self.dtypes = name, device_type, dtypes
        self.prefix, self.workspace = prefix, workspace

    def factor(self, x1, x3, up1: int, up3: int):
        """(x1', x3', S, f1, f3): the inputs at the one factor S the passes tile at (f_i: what
        x_i was upsampled by; its gradient is pooled back)."""
        return common_factor(x1, x3, up1, up3)

    def _dims(self, x2, S: int, x1c: bool, x3c: bool) -> tuple:
        B, C, H, W = x2.shape
        _checks.divisible("x2", x2, S)
        if self.device_type == "cpu":
            return (B, C, H, W, S, x1c, x3c, torch.get_num_threads())
        return (B, C, H, W, S, x1c, x3c)

    def _run(self, what: str, x2, flags: tuple, specs: Sequence[Spec], dims: tuple) -> None:
        ptrs = _pointers(x2.device, specs)
        fn = getattr(_native.lib(), f"{self.prefix}_{what}")
        code = self.dtypes[x2.dtype]
        if self.device_type == "cpu":
            fn(code, *flags, *ptrs, dims)
        else:
            fn(code, *flags, *ptrs, dims, torch.cuda.current_stream(x2.device).cuda_stream,
               x2.device.index if x2.device.index is not None else torch.cuda.current_device())

    def _ws(self, kind: str, dims: tuple, flag: bool, device) -> list:
        if self.workspace is None:
            return []
        n = self.workspace(kind, dims, flag)
        ws = torch.empty((n,), dtype=torch.float32, device=device)
        return [("workspace", ws, (n,), torch.float32)]

    # --- the passes (shapes: x2 (B, C, H, W); "coarse" maps (B, C, H/S, W/S)) --------------------
    def pass1(self, x1, x2, m1, m2, G, s1, s2, G11, G22, up1: int) -> None:
        """G = Σ x1 pool(x2)ᵀ (centred by m1, m2 when given), s1/s2 sums, G11/G22 self-Grams."""
        B, C, H, W = x2.shape
        ct = compute_dtype(x2.dtype)
        lr = (B, C, H // up1, W // up1)
        dims = self._dims(x2, up1, True, False)
        self._run("pass1", x2, (), [
            ("x1", x1, lr, x2.dtype), ("x2", x2, (B, C, H, W), x2.dtype),
            ("m1", m1, (B, C), ct), ("m2", m2, (B, C), ct), ("G", G, (B, C, C), ct),
            ("s1", s1, (B, C), ct), ("s2", s2, (B, C), ct),
            ("G11", G11, (B, C, C), ct), ("G22", G22, (B, C, C), ct),
            *self._ws("pass1", dims, m1 is not None, x2.device)], dims)

    def apply(self, x1, x2, x3, x4, M, c, wg, bg, out, S: int) -> None:
        """out = gated sum of [x1, x2, x3, att], att = M x3 + c + x4 (x1, x3 at factor S or 1)."""
        B, C, H, W = x2.shape
        ct = compute_dtype(x2.dtype)
        x1c, x3c = x1.shape[-1] != W, x3.shape[-1] != W
        hr = (B, C, H, W)
        dims = self._dims(x2, S, x1c, x3c)
        self._run("forward", x2, (), [
            ("x1", x1, _at(hr, S, x1c), x2.dtype), ("x2", x2, hr, x2.dtype),
            ("x3", x3, _at(hr, S, x3c), x2.dtype), ("x4", x4, hr, x2.dtype),
            ("M", M, (B, C, C), ct), ("c", c, (B, C), ct),
            ("wg", wg, (4, 4 * C), ct), ("bg", bg, (4,), ct), ("out", out, hr, x2.dtype),
            *self._ws("forward", dims, False, x2.device)], dims)

    def backward1(self, qk: bool, x1, x2, x3, x4, dout, M, c, wg, bg, dx1, dx2, dx3, dx4, px2,
                  dM, dc, dwg, dbg, S: int) -> None:
        B, C, H, W = x2.shape
        ct, dt = compute_dtype(x2.dtype), x2.dtype
        x1c, x3c = x1.shape[-1] != W, x3.shape[-1] != W
        hr = (B, C, H, W)
        dims = self._dims(x2, S, x1c, x3c)
        self._run("backward1", x2, (qk,), [
            ("x1", x1, _at(hr, S, x1c), dt), ("x2", x2, hr, dt), ("x3", x3, _at(hr, S, x3c), dt),
            ("x4", x4, hr, dt), ("dout", dout, hr, dt), ("M", M, (B, C, C), ct),
            ("c", c, (B, C), ct), ("wg", wg, (4, 4 * C), ct), ("bg", bg, (4,), ct),
            ("dx1", dx1, _at(hr, S, x1c), dt), ("dx2", dx2, hr, dt),
            ("dx3", dx3, _at(hr, S, x3c), dt), ("dx4", dx4, hr, dt),
            ("px2", px2, _at(hr, S, True), dt), ("dM", dM, (B, C, C), ct), ("dc", dc, (B, C), ct),
            ("dwg", dwg, (4, 4 * C), ct), ("dbg", dbg, (4,), ct),
            *self._ws("backward1", dims, wg is not None, x2.device)], dims)

    def backward2(self, accumulate: bool, x1, x2, px2, E12, E11, E22, e1, e2, dx1, dx2,
                  S: int) -> None:
        """dx1 (+)= E12 px2 + S² (E11 x1 + e1), dx2 (+)= up_S(E12ᵀ x1 + e2) + E22 x2; x1 at S."""
        B, C, H, W = x2.shape
        ct, dt = compute_dtype(x2.dtype), x2.dtype
        hr = (B, C, H, W)
        lr = _at(hr, S, True)
        dims = self._dims(x2, S, True, False)
        self._run("backward2", x2, (accumulate,), [
            ("x1", x1, lr, dt), ("x2", x2, hr, dt), ("px2", px2, lr, dt),
            ("E12", E12, (B, C, C), ct), ("E11", E11, (B, C, C), ct), ("E22", E22, (B, C, C), ct),
            ("e1", e1, (B, C), ct), ("e2", e2, (B, C), ct),
            ("dx1", dx1, lr, dt), ("dx2", dx2, hr, dt),
            *self._ws("backward2", dims, False, x2.device)], dims)

    # --- the op's forward and backward (backends.Impl) -------------------------------------------
    def forward(self, x1, x2, x3, x4, w: CSAWeights, spec: CSASpec):
        """(out, stats), as :func:`impl_torch.forward`."""
        x1, x2, x3, x4 = (t.contiguous() for t in (x1, x2, x3, x4))
        B, C, H, W = x2.shape
        ct = compute_dtype(x2.dtype)
        wc = w.to(ct)
        stats = self._statistics(x1, x2, wc, spec.attention, spec.up1)
        small = algebra.forward(wc, *stats, spec.heads, spec.attention, H * W)
        x1s, x3s, S, _, _ = self.factor(x1, x3, spec.up1, spec.up3)
        out = torch.empty(x2.shape, dtype=x2.dtype, device=x2.device)
        self.apply(x1s, x2, x3s, x4, small.M.contiguous(), small.c.contiguous(),
                   *_gate(w.wg, w.bg, ct), out, S)
        return out, stats

    def _statistics(self, x1, x2, w: CSAWeights, attention: str, up1: int) -> CSAStats:
        """(gram, proj, vecs) of :mod:`algebra` (pass 1)."""
        B, C = x2.shape[:2]
        ct, dev = compute_dtype(x2.dtype), x2.device
        shapes = stats_shapes(B, C, w.wq.shape[0], attention)
        if attention == "legacy":
            return CSAStats(*(x2.new_empty(s, dtype=ct) for s in shapes))
        G = torch.empty((B, C, C), dtype=ct, device=dev)
        if attention == "paper":
            s1 = torch.empty((B, C), dtype=ct, device=dev)
            s2 = torch.empty((B, C), dtype=ct, device=dev)
            self.pass1(x1, x2, None, None, G, s1, s2, None, None, up1)
            return CSAStats(G, x2.new_empty(shapes[1], dtype=ct),
                            torch.stack([s1 * up1 ** 2, s2], 1))
        m1, m2 = x1.mean((2, 3), dtype=ct), x2.mean((2, 3), dtype=ct)
        G11 = torch.empty((B, C, C), dtype=ct, device=dev)
        G22 = torch.empty((B, C, C), dtype=ct, device=dev)
        self.pass1(x1, x2, m1, m2, G, None, None, G11, G22, up1)
        return CSAStats(G, torch.stack([w.wq @ (G11 * up1 ** 2), w.wk @ G22], 1),
                        torch.stack([m1, m2], 1))

    def backward(self, dout, x1, x2, x3, x4, w: CSAWeights, stats: CSAStats, spec: CSASpec):
        """Gradients in the order of :func:`impl_torch.backward`."""
        x1, x2, x3, x4, dout = (t.contiguous() for t in (x1, x2, x3, x4, dout))
        B, C, H, W = x2.shape
        dt, ct, dev = x2.dtype, compute_dtype(x2.dtype), x2.device
        heads, attention, up1, up3 = spec
        wc = w.to(ct)
        small = algebra.forward(wc, *stats, heads, attention, H * W)
        x1s, x3s, S, f1, f3 = self.factor(x1, x3, up1, up3)
        x1_coarse = x1s.shape[-1] != W
        gate, qk = w.gate, attention != "legacy"
        new = lambda *shape, dtype=dt: torch.empty(shape, dtype=dtype, device=dev)  # noqa: E731
        dx4, dx3 = new(*x2.shape), new(*x3s.shape)
        if gate or qk:  # written by backward1 (gate) or backward2 (qk)
            dx1, dx2 = new(*x1s.shape), new(*x2.shape)
        else:           # legacy without the gate: x1 and x2 do not reach the output
            dx1, dx2 = torch.zeros_like(x1s), torch.zeros_like(x2)
        px2 = new(B, C, H // S, W // S) if qk and x1_coarse else None
        dM, dc = new(B, C, C, dtype=ct), new(B, C, dtype=ct)
        dwg, dbg = (new(4, 4 * C, dtype=ct), new(4, dtype=ct)) if gate else (None, None)
        self.backward1(qk, x1s, x2, x3s, x4, dout, small.M.contiguous(), small.c.contiguous(),
                       *_gate(w.wg, w.bg, ct), dx1 if gate else None, dx2 if gate else None, dx3,
                       dx4, px2, dM, dc, dwg, dbg, S)
        gr = algebra.backward(dM, dc, wc, small, *stats, heads, attention)
        if qk:
            norm = attention == "normalized"
            mat = lambda m: m.contiguous() if m is not None else None  # noqa: E731
            self.backward2(gate, x1s, x2, px2 if x1_coarse else x2, mat(gr.E12),
                           mat(gr.E11) if norm else None, mat(gr.E22) if norm else None,
                           mat(gr.e1), mat(gr.e2), dx1, dx2, S if x1_coarse else 1)
        return gradients(sum_pool(dx1, f1), dx2, sum_pool(dx3, f3), dx4, gr, dwg, dbg, w)


def _at(hr: tuple, S: int, coarse: bool) -> tuple:
    """The shape of a map at factor S (coarse) or at the full resolution."""
    B, C, H, W = hr
    return (B, C, H // S, W // S) if coarse else hr


def _gate(wg, bg, ct) -> tuple:
    """(wg, bg) in the compute dtype, contiguous; (None, None) without the gate."""
    if wg is None:
        return None, None
    return wg.to(ct).contiguous(), bg.to(ct).contiguous()
