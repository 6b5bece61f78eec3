"""Front doors of the fused ops: pick the backend for the tensors' device and call it."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import backends


def cross_self_attention(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo,
                         wg: Optional[torch.Tensor] = None, bg: Optional[torch.Tensor] = None,
                         temperature: Optional[torch.Tensor] = None, *, heads: int,
                         attention: str = "paper", up1: int = 1, up3: int = 1,
                         backend: str = "auto") -> torch.Tensor:
    """Fused cross self-attention; see :func:`csakd_fast.ops.reference.csa_reference` for the
    formula and shapes. Arguments are assumed validated (the nn layer does it)."""
    fn = backends.get("csa", backend, x2.device)
    return fn(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
              heads, attention, up1, up3)


def clra(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], *,
         groups: int, recompute: bool = False, backend: str = "auto") -> torch.Tensor:
    """One CLRA block; see :func:`csakd_fast.ops.reference.clra_reference`."""
    fn = backends.get("clra", backend, x.device)
    return fn(x, list(weights), list(biases), groups, recompute)
