"""CLRA block, ``backend="torch"``: one growth buffer per dense block and a hand-written backward.

The block, its buffers and the op are :mod:`csakd_fast.ops.clra.op`'s (docs/design.md, "The fused
CLRA"). Each conv reads a channel *prefix* of the buffer, which is exactly the reference's
torch.cat (with ``groups`` > 1 the groups split the prefix, so a group may straddle the u / x1
boundary: aten's grouped conv on the prefix view does the same as on the concatenation). No
torch.cat: convs write their outputs straight into their slice. For B = 1 a prefix is a
contiguous tensor; for B > 1 it is not, and oneDNN / cuDNN take a contiguous copy of it per conv
(a transient, as the reference's torch.cat is in forward).

Backward keeps only the three buffers (``keep=True``; the block's input is not kept, buffer 1
holds a copy) or only the block's input (``recompute``; the buffers are rebuilt in backward,
skipping the last c5 whose output backward does not need). LReLU's derivative is read off the
stored output's sign (LReLU_0.2 keeps the sign). Walking the convs in reverse, the input gradient
of each dense block accumulates into one gradient buffer G of U's layout: G starts as c5's input
gradient (all nf + 4·gc channels) plus dL/dd on u; conv k's gradient is G's x_k slice times
LReLU', and its input gradient is added onto G's prefix. Convolution gradients are
``aten.convolution_backward`` (input, weight and bias gradients in one call). The triton backend
runs the same backward (:func:`clra_backward`) with its own forward for the rebuild and,
optionally, its own input-gradient kernel.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import backends
from .op import N_CONVS, RES, SLOPE, dims, fused_call


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


def backward(gy: Tensor, x: Tensor, bufs: Tensor, weights: Sequence[Tensor],
             biases: Sequence[Tensor], groups: int, need_gx: bool):
    """(dL/dx or None, 15 weight gradients, 15 bias gradients); ``bufs`` empty: rebuilt from x."""
    return clra_backward(gy, x, bufs, weights, biases, groups, need_gx, torch_forward)


IMPL = backends.Impl("clra", "torch", fused_call("torch"), forward=torch_forward,
                     backward=backward,
                     dtypes=(torch.float64, torch.float32, torch.bfloat16, torch.float16))
