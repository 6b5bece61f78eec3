"""Facts about the running platform that more than one module asks."""
from __future__ import annotations

import os


def triton_interpreter() -> bool:
    """True under ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors in Triton's
    interpreter (exact semantics, slow: the test suite uses it on machines without a GPU).
    Triton reads the flag when a kernel module is imported, so it is set before csakd_fast's
    Triton backends are imported (tests/conftest.py does)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
