"""Facts about the running platform that more than one module asks."""
from __future__ import annotations

import os


def triton_interpreter() -> bool:
    """True under ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors in Triton's
    interpreter (exact semantics, slow: the test suite uses it on machines without a GPU).
    Triton reads the flag when a kernel module is imported, so it is set before csakd_fast's
    Triton backends are imported (tests/conftest.py does)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable(device) -> str | None:
    """None when Triton kernels can run on ``device`` (a CUDA device, or any device under the
    interpreter), else the reason: the readiness check of every Triton backend."""
    if device.type != "cuda" and not triton_interpreter():
        return f"Triton needs a CUDA device (or TRITON_INTERPRET=1 on the CPU), got {device}"
    return None
