"""Backend "cpp" of the fused CSA: the pixel passes in C++ on the CPU (csrc/csa/), float32 and
float64.

Multithreaded (``torch.get_num_threads()`` worker threads), vectorised (an AVX2/FMA build chosen
at run time where the CPU has it, the x86-64 baseline otherwise), bitwise reproducible (fixed
reduction order, independent of the thread count). The Python side is :mod:`impl_native`.
"""
from __future__ import annotations

import torch

from ... import _native, backends
from .impl_native import Native
from .op import fused_call

NATIVE = Native("cpp", "cpu", {torch.float32: 0, torch.float64: 1}, prefix="cpu")


def _ready(device: torch.device):
    return None if _native.lib() is not None else _native.why


IMPL = backends.Impl("csa", "cpp", fused_call("cpp"), forward=NATIVE.forward,
                     backward=NATIVE.backward, devices=("cpu",), dtypes=tuple(NATIVE.dtypes),
                     ready=_ready)
