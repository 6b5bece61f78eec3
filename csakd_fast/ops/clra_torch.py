"""CLRA block, ``backend="torch"``: one growth buffer per dense block and a hand-written backward.

Formula (design.md §2, §4), x: (B, nf, H, W), weights/biases: 15 each (dense block j's conv k at
index 5j + k), all 3×3 convs, stride 1, padding 1, one ``groups`` for all::

    dense block:  U = [u | x1 | x2 | x3 | x4]   (B, nf + 4·gc, H, W), u the block's input
                  x_k = LReLU_0.2(c_k(U[:, :nf + (k−1)·gc]))       k = 1..4, written into U's slice
                  d   = 0.2 · c5(U) + u
    CLRA block:   y   = 0.2 · D3(D2(D1(x))) + x

Each conv reads a channel *prefix* of the buffer, which is exactly the reference's torch.cat
(with ``groups`` > 1 the groups split the prefix, so a group may straddle the u / x1 boundary:
aten's grouped conv on the prefix view does the same as on the concatenation). No torch.cat:
convs write their outputs straight into their slice. For B = 1 a prefix is a contiguous tensor;
for B > 1 it is not, and oneDNN / cuDNN take a contiguous copy of it per conv (a transient, as
the reference's torch.cat is in forward; running backward per sample would avoid it — to be
measured on a GPU).

Backward keeps only the three buffers (``keep=True``; the block's input is not kept, buffer 1
holds a copy) or only the block's input (``recompute``; the buffers are rebuilt in backward,
skipping the last c5 whose output backward does not need). LReLU's derivative is read off the
stored output's sign (LReLU_0.2 keeps the sign). Walking the convs in reverse, the input gradient
of each dense block accumulates into one gradient buffer G of U's layout: G starts as c5's input
gradient (all nf + 4·gc channels) plus dL/dd on u; conv k's gradient is G's x_k slice times
LReLU', and its input gradient is added onto G's prefix. Convolution gradients are
``aten.convolution_backward`` (input, weight and bias gradients in one call).

Registered as the ``torch.library`` ops ``csakd_fast::clra_torch`` (forward; returns y and the
kept buffers stacked (3, B, nf + 4·gc, H, W), or an empty tensor) and
``csakd_fast::clra_torch_backward``, with fake and autograd registrations, so that
``torch.compile`` treats the block as one opaque node and ``opcheck`` passes.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from ..backends import register

SLOPE = 0.2   # LeakyReLU negative slope of the dense blocks
RES = 0.2     # residual scale of c5 and of the CLRA block
N_CONVS = 15


# --- validation (the layer validates too; the op front door can be called directly) -----------
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


# --- forward ------------------------------------------------------------------------------
def torch_forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], groups: int,
                  keep: bool, final: bool = True) -> Tuple[Optional[Tensor], Tensor]:
    """Run the block on growth buffers. Returns (y or None, bufs).

    ``keep``: bufs is (3, B, nf + 4·gc, H, W), dense block j's buffer at [j]; otherwise one
    buffer (1, …) is reused by the three dense blocks. ``final=False`` stops after the third
    block's x4 (backward's rebuild: c5's output is not needed there)."""
    B, _, H, W = x.shape
    nf, gc, C = dims(x, weights)
    bufs = x.new_empty((3 if keep else 1, B, C, H, W))
    bufs[0, :, :nf].copy_(x)
    y = None
    for j in range(3):
        U = bufs[j] if keep else bufs[0]
        for k in range(4):
            cin = nf + k * gc
            t = F.conv2d(U[:, :cin], weights[5 * j + k], biases[5 * j + k], padding=1, groups=groups)
            torch._C._nn.leaky_relu(t, SLOPE, out=U[:, cin:cin + gc])
        if j == 2 and not final:
            break
        t = F.conv2d(U, weights[5 * j + 4], biases[5 * j + 4], padding=1, groups=groups)
        if j < 2:
            nxt = bufs[j + 1, :, :nf] if keep else U[:, :nf]   # in place when the buffer is reused
            torch.add(U[:, :nf], t, alpha=RES, out=nxt)
        else:
            t.mul_(RES).add_(U[:, :nf])              # D3 output
            y = torch.add(x, t, alpha=RES)
    return y, bufs


Forward = Callable[..., Tuple[Optional[Tensor], Tensor]]


# --- backward -----------------------------------------------------------------------------
def _conv_backward(go: Tensor, inp: Tensor, w: Tensor, groups: int, need_input: bool):
    return torch.ops.aten.convolution_backward(
        go, inp, w, [w.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], groups,
        [need_input, True, True])


# dgrad(go, weight, groups, out, accumulate): out (+)= the conv's input gradient, in place
Dgrad = Callable[[Tensor, Tensor, int, Tensor, bool], None]


def clra_backward(gy: Tensor, x: Tensor, bufs: Tensor, weights: Sequence[Tensor],
                  biases: Sequence[Tensor], groups: int, need_gx: bool, rebuild: Forward,
                  dgrad: Optional[Dgrad] = None) -> Tuple[Optional[Tensor], List[Tensor], List[Tensor]]:
    """Gradients of y = CLRA(x) given dL/dy. ``bufs`` empty: rebuild them from x with ``rebuild``
    (a forward with the signature of :func:`torch_forward`). ``dgrad``: computes the convs'
    input gradients straight into the gradient buffer (accumulating), the weight and bias
    gradients staying with aten; None: aten computes all three and the input gradient is added
    on. Returns (dL/dx or None, 15 weight gradients, 15 bias gradients)."""
    nf, gc, C = dims(gy, weights)
    if bufs.numel() == 0:
        with torch.no_grad():
            _, bufs = rebuild(x, weights, biases, groups, True, final=False)
    gy = gy.contiguous()
    gw: List[Optional[Tensor]] = [None] * N_CONVS
    gb: List[Optional[Tensor]] = [None] * N_CONVS
    gd = gy * RES                                     # dL/dD3
    for j in (2, 1, 0):
        U = bufs[j]
        i = 5 * j + 4
        if dgrad is None:
            G, gw[i], gb[i] = _conv_backward(gd * RES, U, weights[i], groups, True)
        else:
            go = gd * RES
            G = U.new_empty(U.shape)
            dgrad(go, weights[i], groups, G, False)
            _, gw[i], gb[i] = _conv_backward(go, U, weights[i], groups, False)
            del go
        G[:, :nf] += gd                               # d = 0.2·c5(U) + u
        del gd
        for k in (3, 2, 1, 0):
            cin, i = nf + k * gc, 5 * j + k
            go = torch.ops.aten.leaky_relu_backward(G[:, cin:cin + gc], U[:, cin:cin + gc],
                                                    SLOPE, True)
            need_in = need_gx or j > 0 or k > 0
            gi, gw[i], gb[i] = _conv_backward(go, U[:, :cin], weights[i], groups,
                                              need_in and dgrad is None)
            if need_in and dgrad is None:
                G[:, :cin] += gi
            elif need_in:
                dgrad(go, weights[i], groups, G[:, :cin], True)
            del go, gi
        gd = G[:, :nf]
        del G
    gx = gd + gy if need_gx else None
    return gx, gw, gb


# --- torch.library registration -----------------------------------------------------------
def _fake_forward(x, weights, biases, groups, keep):
    B, _, H, W = x.shape
    _, _, C = dims(x, weights)
    bufs = x.new_empty((3, B, C, H, W)) if keep else x.new_empty((0,))
    return x.new_empty(x.shape), bufs


def _fake_backward(gy, x, bufs, weights, biases, groups, need_gx):
    gx = gy.new_empty(gy.shape) if need_gx else gy.new_empty((0,))
    return gx, [w.new_empty(w.shape) for w in weights], [b.new_empty(b.shape) for b in biases]


def _backward_outputs(gy, gx, gw, gb):
    return (gx if gx is not None else gy.new_empty((0,))), list(gw), list(gb)


def register_autograd(fwd_op, bwd_op) -> None:
    """Autograd of a forward op with the schema of ``csakd_fast::clra_torch`` through a backward
    op with the schema of ``csakd_fast::clra_torch_backward`` (shared with the Triton backend)."""

    def setup_context(ctx, inputs, output):
        x, weights, biases, groups, keep = inputs
        _, bufs = output
        ctx.groups, ctx.keep, ctx.n = groups, keep, len(weights)
        # kept: the buffers (keep) or the block's input (recompute), and the parameters
        ctx.save_for_backward(None if keep else x, bufs if keep else None, *weights, *biases)
        ctx.mark_non_differentiable(bufs)
        ctx.set_materialize_grads(False)

    def backward(ctx, gy, _gbufs):
        if gy is None:   # y unused: no gradient (the structure must mirror the inputs)
            return None, [None] * ctx.n, [None] * ctx.n, None, None
        saved, n = ctx.saved_tensors, ctx.n
        empty = gy.new_empty((0,))
        x = empty if saved[0] is None else saved[0]
        bufs = empty if saved[1] is None else saved[1]
        weights, biases = list(saved[2:2 + n]), list(saved[2 + n:])
        gx, gw, gb = bwd_op(gy, x, bufs, weights, biases, ctx.groups, ctx.needs_input_grad[0])
        return (gx if ctx.needs_input_grad[0] else None), list(gw), list(gb), None, None

    fwd_op.register_autograd(backward, setup_context=setup_context)


@torch.library.custom_op("csakd_fast::clra_torch", mutates_args=())
def clra_torch_op(x: Tensor, weights: List[Tensor], biases: List[Tensor], groups: int,
                  keep: bool) -> Tuple[Tensor, Tensor]:
    """y = CLRA(x) (B, nf, H, W) and, with ``keep``, the three growth buffers (3, B, nf + 4·gc, H, W)."""
    y, bufs = torch_forward(x, weights, biases, groups, keep)
    return y, (bufs if keep else x.new_empty((0,)))


@torch.library.custom_op("csakd_fast::clra_torch_backward", mutates_args=())
def clra_torch_backward_op(gy: Tensor, x: Tensor, bufs: Tensor, weights: List[Tensor],
                           biases: List[Tensor], groups: int,
                           need_gx: bool) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
    """(dL/dx or an empty tensor, 15 weight gradients, 15 bias gradients); ``bufs`` empty:
    rebuilt from x."""
    return _backward_outputs(gy, *clra_backward(gy, x, bufs, weights, biases, groups, need_gx,
                                                torch_forward))


clra_torch_op.register_fake(_fake_forward)
clra_torch_backward_op.register_fake(_fake_backward)
register_autograd(clra_torch_op, clra_torch_backward_op)


@register("clra", "torch")
def clra_torch(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], groups: int,
               recompute: bool = False) -> Tensor:
    """One CLRA block (see the module docstring); ``recompute`` keeps only x for backward."""
    check_args(x, weights, biases, groups)
    keep = (not recompute) and needs_grad(x, weights, biases)
    y, _ = clra_torch_op(x.contiguous(), list(weights), list(biases), groups, keep)
    return y
