"""The fused CLRA op: its schema and autograd rule, its argument checks, its front door.

``csakd_fast::clra_fwd(x, weights, biases, groups, keep, backend) -> (y, bufs)`` and
``csakd_fast::clra_bwd(gy, x, bufs, weights, biases, groups, need_gx, backend) -> (gx, gw, gb)``
are one pair of ``torch.library`` custom ops shared by the fused backends (torch, triton); the
backend is a string argument and the op runs the registered implementation's ``forward`` /
``backward`` (csakd_fast.backends), so torch.compile treats a block as one opaque node and
``opcheck`` runs per backend by passing the string (the same design as the CSA's op).

Formula and buffers (docs/design.md, "The fused CLRA"), x: (B, nf, H, W), weights/biases: 15 each
(dense block j's conv k at index 5j + k), all 3×3 convs, stride 1, padding 1, one ``groups``::

    dense block:  U = [u | x1 | x2 | x3 | x4]   (B, nf + 4·gc, H, W), u the block's input
                  x_k = LReLU_0.2(c_k(U[:, :nf + (k−1)·gc]))       k = 1..4, written into U's slice
                  d   = 0.2 · c5(U) + u
    CLRA block:   y   = 0.2 · D3(D2(D1(x))) + x

``bufs``: with ``keep`` the three growth buffers (3, B, nf + 4·gc, H, W) kept for backward,
otherwise an empty tensor (``recompute``, or no gradient needed); ``clra_bwd`` rebuilds them
from x when given an empty one. ``gx`` is an empty tensor when ``need_gx`` is false.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from ... import _checks, backends

SLOPE = 0.2   # LeakyReLU negative slope of the dense blocks
RES = 0.2     # residual scale of c5 and of the CLRA block
N_CONVS = 15


def check_args(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], groups: int) -> None:
    """Shapes of one CLRA block: x (B, nf, H, W); weight 5j+k (gc or nf, (nf + k·gc)/groups, 3, 3)."""
    _checks.tensor("x", x, 4)
    if len(weights) != N_CONVS or len(biases) != N_CONVS:
        raise ValueError(f"weights, biases: expected {N_CONVS} each (3 dense blocks × 5 convs), "
                         f"got {len(weights)} and {len(biases)}")
    _checks.positive_int("groups", groups)
    nf, gc = x.shape[1], weights[0].shape[0]
    for i, (w, b) in enumerate(zip(weights, biases)):
        k = i % 5
        cout = nf if k == 4 else gc
        want = (cout, (nf + k * gc) // groups, 3, 3)
        if tuple(w.shape) != want or (nf + k * gc) % groups or cout % groups:
            raise ValueError(f"weights[{i}]: expected shape {want} (nf={nf} from x, gc={gc} from "
                             f"weights[0], groups={groups}), got {tuple(w.shape)}")
        if b is None or tuple(b.shape) != (cout,):
            raise ValueError(f"biases[{i}]: expected shape ({cout},), got "
                             f"{None if b is None else tuple(b.shape)}")
        _checks.same_device_dtype(("x", f"weights[{i}]", f"biases[{i}]"), (x, w, b))


def dims(x: Tensor, weights: Sequence[Tensor]) -> Tuple[int, int, int]:
    """(nf, gc, nf + 4·gc) of a block."""
    nf, gc = x.shape[1], weights[0].shape[0]
    return nf, gc, nf + 4 * gc


def needs_grad(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in weights)
                                        or any(t.requires_grad for t in biases))


@torch.library.custom_op("csakd_fast::clra_fwd", mutates_args=())
def clra_fwd(x: Tensor, weights: List[Tensor], biases: List[Tensor], groups: int, keep: bool,
             backend: str) -> Tuple[Tensor, Tensor]:
    y, bufs = backends.fused("clra", backend, x, "x").forward(x, weights, biases, groups, keep)
    return y, (bufs if keep else x.new_empty((0,)))


@clra_fwd.register_fake
def _clra_fwd_fake(x, weights, biases, groups, keep, backend):
    B, _, H, W = x.shape
    _, _, C = dims(x, weights)
    bufs = x.new_empty((3, B, C, H, W)) if keep else x.new_empty((0,))
    return x.new_empty(x.shape), bufs


@torch.library.custom_op("csakd_fast::clra_bwd", mutates_args=())
def clra_bwd(gy: Tensor, x: Tensor, bufs: Tensor, weights: List[Tensor], biases: List[Tensor],
             groups: int, need_gx: bool, backend: str) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
    impl = backends.fused("clra", backend, gy, "gy")
    gx, gw, gb = impl.backward(gy, x, bufs, weights, biases, groups, need_gx)
    return (gx if gx is not None else gy.new_empty((0,))), list(gw), list(gb)


@clra_bwd.register_fake
def _clra_bwd_fake(gy, x, bufs, weights, biases, groups, need_gx, backend):
    gx = gy.new_empty(gy.shape) if need_gx else gy.new_empty((0,))
    return gx, [w.new_empty(w.shape) for w in weights], [b.new_empty(b.shape) for b in biases]


def _setup_context(ctx, inputs, output):
    x, weights, biases, groups, keep, backend = inputs
    _, bufs = output
    ctx.groups, ctx.keep, ctx.n, ctx.backend = groups, keep, len(weights), backend
    # kept: the buffers (keep) or the block's input (recompute), and the parameters
    ctx.save_for_backward(None if keep else x, bufs if keep else None, *weights, *biases)
    ctx.mark_non_differentiable(bufs)
    ctx.set_materialize_grads(False)


def _backward(ctx, gy, _gbufs):
    if gy is None:   # y unused: no gradient (the structure must mirror the inputs)
        return None, [None] * ctx.n, [None] * ctx.n, None, None, None
    saved, n = ctx.saved_tensors, ctx.n
    empty = gy.new_empty((0,))
    x = empty if saved[0] is None else saved[0]
    bufs = empty if saved[1] is None else saved[1]
    weights, biases = list(saved[2:2 + n]), list(saved[2 + n:])
    gx, gw, gb = clra_bwd(gy, x, bufs, weights, biases, ctx.groups, ctx.needs_input_grad[0],
                          ctx.backend)
    return (gx if ctx.needs_input_grad[0] else None), list(gw), list(gb), None, None, None


clra_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_call(backend: str):
    """The front-door ``call`` of a fused backend: the op with that backend string;
    ``recompute`` keeps only x for backward (the buffers are rebuilt there)."""

    def call(x, weights, biases, groups: int, recompute: bool) -> Tensor:
        keep = (not recompute) and needs_grad(x, weights, biases)
        y, _ = clra_fwd(x.contiguous(), list(weights), list(biases), groups, keep, backend)
        return y

    call.__name__ = f"clra_{backend}"
    return call


def clra(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], *, groups: int,
         recompute: bool = False, backend: str = "auto") -> Tensor:
    """One CLRA block (module docstring) on the backend :func:`backends.resolve` picks for
    ``backend``; ``recompute`` asks a fused backend to keep only x for backward."""
    check_args(x, weights, biases, groups)
    name = backends.resolve("clra", backend, x.device, x.dtype, x.shape[1], "x")
    return backends.get("clra", name).call(x, list(weights), list(biases), groups, recompute)
