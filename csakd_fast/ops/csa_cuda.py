"""Backend "cuda" of the fused CSA: the pixel passes as CUDA C++ kernels (kernels/), float32,
float16 and bfloat16.

The extension must have been built with its CUDA kernels (``CSAKD_BUILD_CUDA=1 pip install -e .``,
or a build on a machine with a GPU); the kernels are compiled for sm_80 and sm_90 (and PTX for
newer GPUs). Float64 calls, and channel counts above the kernels' shared-memory limit
(``_C.cuda_max_channels()``), run the torch backend. The Python side is :mod:`csa_native`.
"""
from __future__ import annotations

import torch

from .. import _native
from ..backends import register
from . import csa_native, csa_op
from .csa_torch import common_factor

_lib = _native.lib()
if _lib is None:
    raise ImportError(_native.why)
if not _lib.HAS_CUDA:
    raise ImportError("the native extension was built without its CUDA kernels (rebuild with "
                      "CSAKD_BUILD_CUDA=1 pip install -e .)")

_KINDS = {"pass1": 0, "forward": 1, "backward1": 2, "backward2": 3}


class _Cuda(csa_native.Native):
    def check_inputs(self, x2: torch.Tensor) -> None:
        super().check_inputs(x2)
        if x2.shape[1] > _lib.cuda_max_channels():
            raise ValueError(f"x2: the cuda backend takes at most {_lib.cuda_max_channels()} channels, "
                             f"got {x2.shape[1]} (use backend='torch')")
        major, minor = torch.cuda.get_device_capability(x2.device)
        if major < 8:
            raise ValueError(f"x2: the cuda backend needs a GPU of compute capability 8.0 or newer, "
                             f"got {major}.{minor} on {x2.device} (use backend='triton' or 'torch')")

    def factor(self, x1, x3, up1: int, up3: int):
        """As :func:`csa_torch.common_factor`, and the kernels also need x3 at the tile factor: a
        full-resolution x3 with a coarse x1 (up3 = 1 < up1) has x1 upsampled to full resolution."""
        x1s, x3s, S, f1, f3 = common_factor(x1, x3, up1, up3)
        if S > 1 and up3 == 1:
            x1s = x1s.repeat_interleave(S, 2).repeat_interleave(S, 3)
            return x1s, x3s, 1, f1 * S, f3
        return x1s, x3s, S, f1, f3


NATIVE = _Cuda("cuda", "cuda", {torch.float32: 0, torch.float16: 2, torch.bfloat16: 3}, prefix="cuda",
               workspace=lambda kind, dims, flag: _lib.cuda_workspace(_KINDS[kind], dims, flag))
csa_op.register_impl("cuda", NATIVE.forward, NATIVE.backward)


@register("csa", "cuda")
def csa_cuda(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
             heads: int, attention: str, up1: int = 1, up3: int = 1) -> torch.Tensor:
    """The fused CSA through ``csakd::csa_fwd`` with the CUDA passes (float64 and wider than
    ``cuda_max_channels()`` run the torch backend)."""
    ok = x2.dtype in NATIVE.dtypes and x2.shape[1] <= _lib.cuda_max_channels()
    return csa_op.csa(x1, x2, x3, x4, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, temperature,
                      heads, attention, up1, up3, "cuda" if ok else "torch")
