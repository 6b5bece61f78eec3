"""Backend "cpp" of the fused CSA: the pixel passes in C++ on the CPU (csrc/), float32 and float64.

Multithreaded (``torch.get_num_threads()`` worker threads), vectorised (an AVX2/FMA build chosen
at run time where the CPU has it, the x86-64 baseline otherwise), bitwise reproducible (fixed
reduction order, independent of the thread count). The Python side is :mod:`csa_native`.
"""
from __future__ import annotations

import torch

from .. import _native
from ..backends import register
from . import csa_native, csa_op

if _native.lib() is None:
    raise ImportError(_native.why)

NATIVE = csa_native.Native("cpp", "cpu", {torch.float32: 0, torch.float64: 1}, prefix="cpu")
csa_op.register_impl("cpp", NATIVE.forward, NATIVE.backward)


@register("csa", "cpp")
def csa_cpp(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
            heads: int, attention: str, up1: int = 1, up3: int = 1) -> torch.Tensor:
    """The fused CSA through ``csakd::csa_fwd`` with the C++ passes (float16/bfloat16 calls run
    the torch backend: the C++ passes are float32/float64)."""
    backend = "cpp" if x2.dtype in NATIVE.dtypes else "torch"
    return csa_op.csa(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
                      heads, attention, up1, up3, backend)
