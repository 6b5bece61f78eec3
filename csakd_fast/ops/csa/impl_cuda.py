"""Backend "cuda" of the fused CSA: the pixel passes as CUDA C++ kernels (kernels/csa/), float32,
float16 and bfloat16, on GPUs of compute capability 8.0 or newer.

The extension must have been built with its CUDA kernels (``CSAKD_BUILD_CUDA=1 pip install -e .``,
or a build on a machine with a GPU); the kernels are compiled for sm_80 and sm_90 (and PTX for
newer GPUs). The channel count is limited by the kernels' shared memory
(``_C.cuda_max_channels()``). The Python side is :mod:`impl_native`.
"""
from __future__ import annotations

import torch

from ... import _native, backends
from ..pixels import common_factor
from .impl_native import Native
from .op import fused_call

_KINDS = {"pass1": 0, "forward": 1, "backward1": 2, "backward2": 3}


class _Cuda(Native):
    def factor(self, x1, x3, up1: int, up3: int):
        """As :func:`csakd_fast.ops.pixels.common_factor`, and the kernels also need x3 at the
        tile factor: a full-resolution x3 with a coarse x1 (up3 = 1 < up1) has x1 upsampled to
        full resolution."""
        x1s, x3s, S, f1, f3 = common_factor(x1, x3, up1, up3)
        if S > 1 and up3 == 1:
            x1s = x1s.repeat_interleave(S, 2).repeat_interleave(S, 3)
            return x1s, x3s, 1, f1 * S, f3
        return x1s, x3s, S, f1, f3


def _workspace(kind: str, dims: tuple, flag: bool) -> int:
    return _native.lib().cuda_workspace(_KINDS[kind], dims, flag)


NATIVE = _Cuda("cuda", "cuda", {torch.float32: 0, torch.float16: 2, torch.bfloat16: 3},
               prefix="cuda", workspace=_workspace)


def _ready(device: torch.device):
    lib = _native.lib()
    if lib is None:
        return _native.why
    if not lib.HAS_CUDA:
        return ("the native extension was built without its CUDA kernels (rebuild with "
                "CSAKD_BUILD_CUDA=1 pip install -e .)")
    if not torch.cuda.is_available():
        return "the cuda backend needs a CUDA GPU, and none is available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return (f"the cuda backend needs a GPU of compute capability 8.0 or newer, got "
                f"{major}.{minor} on {device}")
    return None


def _limits(channels):
    most = _native.lib().cuda_max_channels()
    if channels is not None and channels > most:
        return f"the cuda backend takes at most {most} channels, got {channels}"
    return None


IMPL = backends.Impl("csa", "cuda", fused_call("cuda"), forward=NATIVE.forward,
                     backward=NATIVE.backward, devices=("cuda",), dtypes=tuple(NATIVE.dtypes),
                     ready=_ready, limits=_limits)
