"""The fused CSA as torch.library ops: ``csakd::csa_fwd`` and ``csakd::csa_bwd``.

One schema for the fused forward and one for its backward, shared by every fused backend; the
backend is a string argument. Why one op with a backend argument rather than one op per backend:
the backends differ only in how they run the pixel passes, while the schema, the fake (meta)
kernel, the saved statistics and the autograd formula are the same; one op keeps those in one
place, torch.compile sees one opaque call with a constant string either way, and ``opcheck`` runs
per backend by passing the string. Backends plug their pass implementations in with
:func:`register_impl` (``csa_torch``, ``csa_triton``, ``csa_cpp`` and ``csa_cuda`` do it when
imported).

``csa_fwd(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg?, bg?, temperature?, heads,
attention, up1, up3, backend) -> (out, gram, proj, vecs)``: ``out`` (B, C, H, W) is the result of
:func:`csakd_fast.ops.reference.csa_reference`; gram/proj/vecs are the small per-sample pass-1
statistics of :mod:`csa_small` (float32, float64 for float64 inputs), non-differentiable.

Saved for backward: the op's inputs as given (the four maps and the weights, no copies) and
gram, proj, vecs: at most C² + 2·D·C + 2·C numbers per sample, nothing proportional to H·W.
Every per-pixel intermediate (att, the gates) is recomputed in ``csa_bwd``.

Why ``custom_op`` and not ``torch.library.triton_op``: triton_op would let inductor see the Triton
kernels, but under ``TRITON_INTERPRET=1`` (torch 2.13, triton 3.9) it runs eagerly and fails as
soon as fake tensors are involved (torch.compile and opcheck's ``test_faketensor``: the interpreter
reads the data pointers of FakeTensors, "Attempted to set the storage of a tensor on device meta
to a storage on different device cpu"), so it could not be tested on this project's GPU-less
machines. A custom_op is opaque to inductor and works everywhere.

``csa_bwd(dout, <the 15 tensor inputs>, gram, proj, vecs, heads, attention, up1, up3, backend)
-> [dx1, dx2, dx3, dx4, dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo, dwg, dbg, dtemperature]``; an
absent optional input gets an empty tensor. dx1, dx3 have the (LR) shapes of x1, x3.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .csa_small import compute_dtype, stats_shapes

_IMPLS: Dict[str, Tuple[Callable, Callable]] = {}


def register_impl(backend: str, forward: Callable, backward: Callable) -> None:
    """``forward(x1..temperature, heads, attention, up1, up3) -> (out, gram, proj, vecs)``;
    ``backward(dout, x1..temperature, gram, proj, vecs, heads, attention, up1, up3) -> list``."""
    _IMPLS[backend] = (forward, backward)


def _impl(backend: str) -> Tuple[Callable, Callable]:
    if backend not in _IMPLS:  # e.g. opcheck or a compiled graph calling the op directly
        importlib.import_module(f"{__package__}.csa_{backend}")
    return _IMPLS[backend]


@torch.library.custom_op("csakd::csa_fwd", mutates_args=())
def csa_fwd(x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, wq: Tensor, bq: Tensor, wk: Tensor,
            bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor, wg: Optional[Tensor],
            bg: Optional[Tensor], temperature: Optional[Tensor], heads: int, attention: str,
            up1: int, up3: int, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _impl(backend)[0](x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg,
                             temperature, heads, attention, up1, up3)


@csa_fwd.register_fake
def _csa_fwd_fake(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature, heads,
                  attention, up1, up3, backend):
    B, C = x2.shape[:2]
    ct = compute_dtype(x2.dtype)
    stats = (x2.new_empty(s, dtype=ct) for s in stats_shapes(B, C, wq.shape[0], attention))
    return (torch.empty_like(x2, memory_format=torch.contiguous_format), *stats)


@torch.library.custom_op("csakd::csa_bwd", mutates_args=())
def csa_bwd(dout: Tensor, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, wq: Tensor, bq: Tensor,
            wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor,
            wg: Optional[Tensor], bg: Optional[Tensor], temperature: Optional[Tensor],
            gram: Tensor, proj: Tensor, vecs: Tensor, heads: int, attention: str, up1: int,
            up3: int, backend: str) -> List[Tensor]:
    return _impl(backend)[1](dout, x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg,
                             temperature, gram, proj, vecs, heads, attention, up1, up3)


@csa_bwd.register_fake
def _csa_bwd_fake(dout, x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
                  gram, proj, vecs, heads, attention, up1, up3, backend):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    opt = lambda t: x2.new_empty(0) if t is None else like(t)  # noqa: E731
    return [like(x1), like(x2), like(x3), like(x4), like(wq), like(bq), like(wk), like(bk),
            like(wv), like(bv), like(wo), like(bo), opt(wg), opt(bg), opt(temperature)]


def _setup_context(ctx, inputs, output):
    *tensors, heads, attention, up1, up3, backend = inputs
    _, gram, proj, vecs = output
    ctx.save_for_backward(*tensors, gram, proj, vecs)
    ctx.config = (heads, attention, up1, up3, backend)
    ctx.mark_non_differentiable(gram, proj, vecs)


def _backward(ctx, dout, *_stats_grads):
    saved = ctx.saved_tensors
    grads = csa_bwd(dout, *saved, *ctx.config)
    # an optional input that was None gets None (csa_bwd returns an empty tensor for it)
    grads = [None if saved[i] is None else g for i, g in enumerate(grads)]
    return (*grads, None, None, None, None, None)


csa_fwd.register_autograd(_backward, setup_context=_setup_context)


def backward_result(dx1, dx2, dx3, dx4, gr, dwg, dbg, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg,
                    temperature) -> List[Tensor]:
    """The list ``csa_bwd`` returns, shared by every backend: the input gradients as given, then
    the weight gradients of ``gr`` (:class:`csa_small.Grads`) and of the gate (``dwg``, ``dbg``;
    unused without it) in their parameters' dtypes. Weight gradients are copies (some are views
    of one another, and outputs of an op may not alias); an absent optional input gets an empty
    tensor, the temperature a zero gradient outside ``normalized``."""
    empty = lambda: dx2.new_empty(0)  # noqa: E731
    pw = lambda g, ref: g.to(ref.dtype, copy=True)  # noqa: E731
    gate = wg is not None
    if temperature is None:
        tau = empty()
    else:
        tau = torch.zeros_like(temperature) if gr.tau is None else pw(gr.tau, temperature)
    return [dx1, dx2, dx3, dx4,
            pw(gr.wq, wq), pw(gr.bq, bq), pw(gr.wk, wk), pw(gr.bk, bk),
            pw(gr.wv, wv), pw(gr.bv, bv), pw(gr.wo, wo), pw(gr.bo, bo),
            pw(dwg, wg) if gate else empty(), pw(dbg, bg) if gate else empty(), tau]


def csa(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature, heads: int,
        attention: str, up1: int, up3: int, backend: str) -> Tensor:
    """The fused CSA output (B, C, H, W) through ``csakd::csa_fwd`` with ``backend``."""
    return csa_fwd(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
                   int(heads), attention, int(up1), int(up3), backend)[0]
