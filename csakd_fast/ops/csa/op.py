"""The fused CSA op: its parameter objects, its schema and autograd rule, its front door.

``csakd_fast::csa_fwd`` / ``csakd_fast::csa_bwd`` are one pair of ``torch.library`` custom ops
shared by every fused backend (torch, triton, cpp, cuda); the backend is a string argument and
the op runs the registered implementation's ``forward`` / ``backward`` (csakd_fast.backends).
Why one op pair with a backend argument rather than one per backend: the backends differ only in
how they run the pixel passes, while the schema, the fake (meta) kernel, the saved statistics and
the autograd formula are the same; torch.compile sees one opaque call with a constant string
either way, and ``opcheck`` runs per backend by passing the string. The tensors are flat only in
the schema; below it they travel as a :class:`CSAWeights` and a :class:`CSASpec`.

``csa_fwd(x1, x2, x3, x4, *CSAWeights, *CSASpec, backend) -> (out, gram, proj, vecs)``: ``out``
(B, C, H, W) is :func:`csakd_fast.ops.csa.reference.csa_reference`'s result; gram/proj/vecs are
the small per-sample pass-1 statistics of :mod:`csakd_fast.ops.csa.algebra` (float32, float64
for float64 inputs), non-differentiable. Saved for backward: the op's inputs as given (no copies)
and the statistics — at most C² + 2·D·C + 2·C numbers per sample, nothing proportional to H·W;
every per-pixel intermediate (att, the gates) is recomputed in ``csa_bwd``.

``csa_bwd(dout, x1..x4, *CSAWeights, gram, proj, vecs, *CSASpec, backend) -> [dx1, dx2, dx3,
dx4, d(each weight)]``; an absent optional weight gets an empty tensor. dx1, dx3 have the (LR)
shapes of x1, x3.

Why ``custom_op`` and not ``torch.library.triton_op``: triton_op would let inductor see the Triton
kernels, but under ``TRITON_INTERPRET=1`` it runs eagerly and fails as soon as fake tensors are
involved (torch.compile and opcheck's ``test_faketensor`` read the data pointers of FakeTensors),
so it could not be tested on GPU-less machines. A custom_op is opaque to inductor and works
everywhere.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ... import backends
from .algebra import ATTENTIONS, compute_dtype, stats_shapes  # noqa: F401 (ATTENTIONS re-exported)

__all__ = ["CSAWeights", "CSASpec", "csa_fwd", "csa_bwd", "cross_self_attention", "fused_call",
           "gradients", "ATTENTIONS"]


class CSAWeights(NamedTuple):
    """The CSA's parameters as matrices (C channels, D = attn_dim):
    query/key/value projections wq, wk, wv (D, C) with biases (D,); output projection wo (C, D),
    bo (C,); the gate wg (4, 4C), bg (4,) or None (the ungated MHCA form); the per-head
    temperature (heads,) of the ``normalized`` attention or None."""

    wq: Tensor
    bq: Tensor
    wk: Tensor
    bk: Tensor
    wv: Tensor
    bv: Tensor
    wo: Tensor
    bo: Tensor
    wg: Optional[Tensor] = None
    bg: Optional[Tensor] = None
    temperature: Optional[Tensor] = None

    @property
    def gate(self) -> bool:
        return self.wg is not None

    def to(self, dtype: torch.dtype) -> "CSAWeights":
        """The same weights in ``dtype`` (absent ones stay None)."""
        return CSAWeights(*(None if t is None else t.to(dtype) for t in self))


class CSASpec(NamedTuple):
    """The non-tensor arguments: head count, attention mode (``ATTENTIONS``) and the nearest
    factors of x1 and x3 (they may be given at a resolution ``up1`` / ``up3`` times lower)."""

    heads: int
    attention: str = "paper"
    up1: int = 1
    up3: int = 1


class CSAStats(NamedTuple):
    """The pass-1 statistics (:func:`csakd_fast.ops.csa.algebra.stats_shapes`)."""

    gram: Tensor
    proj: Tensor
    vecs: Tensor


N_WEIGHTS = len(CSAWeights._fields)


@torch.library.custom_op("csakd_fast::csa_fwd", mutates_args=())
def csa_fwd(x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, wq: Tensor, bq: Tensor, wk: Tensor,
            bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor, wg: Optional[Tensor],
            bg: Optional[Tensor], temperature: Optional[Tensor], heads: int, attention: str,
            up1: int, up3: int, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    impl = backends.fused("csa", backend, x2, "x2")
    w = CSAWeights(wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature)
    out, stats = impl.forward(x1, x2, x3, x4, w, CSASpec(heads, attention, up1, up3))
    return (out, *stats)


@csa_fwd.register_fake
def _csa_fwd_fake(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature, heads,
                  attention, up1, up3, backend):
    B, C = x2.shape[:2]
    ct = compute_dtype(x2.dtype)
    stats = (x2.new_empty(s, dtype=ct) for s in stats_shapes(B, C, wq.shape[0], attention))
    return (torch.empty_like(x2, memory_format=torch.contiguous_format), *stats)


@torch.library.custom_op("csakd_fast::csa_bwd", mutates_args=())
def csa_bwd(dout: Tensor, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, wq: Tensor, bq: Tensor,
            wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor,
            wg: Optional[Tensor], bg: Optional[Tensor], temperature: Optional[Tensor],
            gram: Tensor, proj: Tensor, vecs: Tensor, heads: int, attention: str, up1: int,
            up3: int, backend: str) -> List[Tensor]:
    impl = backends.fused("csa", backend, x2, "x2")
    w = CSAWeights(wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature)
    return impl.backward(dout, x1, x2, x3, x4, w, CSAStats(gram, proj, vecs),
                         CSASpec(heads, attention, up1, up3))


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


def gradients(dx1, dx2, dx3, dx4, gr, dwg, dbg, w: CSAWeights) -> List[Tensor]:
    """The list ``csa_bwd`` returns, shared by every backend: the input gradients as given, then
    the weight gradients of ``gr`` (:class:`csakd_fast.ops.csa.algebra.Grads`) and of the gate
    (``dwg``, ``dbg``; unused without it) in their parameters' dtypes. Weight gradients are copies
    (some are views of one another, and outputs of an op may not alias); an absent optional
    weight gets an empty tensor, the temperature a zero gradient outside ``normalized``."""
    empty = lambda: dx2.new_empty(0)  # noqa: E731
    pw = lambda g, ref: g.to(ref.dtype, copy=True)  # noqa: E731
    if w.temperature is None:
        tau = empty()
    else:
        tau = torch.zeros_like(w.temperature) if gr.tau is None else pw(gr.tau, w.temperature)
    return [dx1, dx2, dx3, dx4,
            pw(gr.wq, w.wq), pw(gr.bq, w.bq), pw(gr.wk, w.wk), pw(gr.bk, w.bk),
            pw(gr.wv, w.wv), pw(gr.bv, w.bv), pw(gr.wo, w.wo), pw(gr.bo, w.bo),
            pw(dwg, w.wg) if w.gate else empty(), pw(dbg, w.bg) if w.gate else empty(), tau]


def fused_call(backend: str):
    """The front-door ``call`` of a fused backend: the op with that backend string."""

    def call(x1, x2, x3, x4, w: CSAWeights, spec: CSASpec) -> Tensor:
        return csa_fwd(x1, x2, x3, x4, *w, int(spec.heads), spec.attention, int(spec.up1),
                       int(spec.up3), backend)[0]

    call.__name__ = f"csa_{backend}"
    return call


def cross_self_attention(x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, weights: CSAWeights, *,
                         heads: int, attention: str = "paper", up1: int = 1, up3: int = 1,
                         backend: str = "auto") -> Tensor:
    """The CSA fusion of four maps (docs/design.md, "The fused CSA"; the formula and shapes are
    :func:`csakd_fast.ops.csa.reference.csa_reference`'s) on the backend :func:`backends.resolve`
    picks for ``backend``. Arguments are assumed validated (the nn layer does it)."""
    name = backends.resolve("csa", backend, x2.device, x2.dtype, x2.shape[1], "x2")
    return backends.get("csa", name).call(x1, x2, x3, x4, weights,
                                          CSASpec(heads, attention, up1, up3))
