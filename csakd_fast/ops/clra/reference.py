"""The CLRA block as the public code computes it (``MultiScaleFeatAggregation``), kept as the
baseline of every fused backend: torch.cat growth and one activation per conv, as autograd keeps
them. Every fused backend must agree with it (tests/test_op_clra.py)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def dense_block_reference(x: torch.Tensor, weights: Sequence[torch.Tensor],
                          biases: Sequence[torch.Tensor], groups: int) -> torch.Tensor:
    """ESRGAN-style dense block: x_k = LReLU(c_k([x, x_1..x_{k-1}])), out = 0.2·c5(·) + x."""
    feats = [x]
    for k in range(4):
        feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), weights[k], biases[k],
                                           padding=1, groups=groups), 0.2))
    return F.conv2d(torch.cat(feats, 1), weights[4], biases[4], padding=1, groups=groups) * 0.2 + x


def clra_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                   groups: int, recompute: bool = False) -> torch.Tensor:
    """CLRA block: three dense blocks, out = 0.2·chain(x) + x.

    weights/biases: 15 each, dense block j's conv k at index 5j + k. ``recompute`` has no effect
    on the reference (it keeps what autograd keeps)."""
    y = x
    for j in range(3):
        y = dense_block_reference(y, weights[5 * j:5 * j + 5], biases[5 * j:5 * j + 5], groups)
    return y * 0.2 + x
