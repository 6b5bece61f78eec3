import os

import pytest
import torch

# Triton kernels run under the interpreter where there is no GPU; the flag is read when a kernel
# module is imported, so it is set before anything imports csakd_fast's Triton backends.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def small(preset="teacher", **kw):
    """A small configuration of a preset (bands=31, msi_bands=3, nf=16, gc=8)."""
    import csakd_fast as cf

    base = dict(bands=31, msi_bands=3, nf=16, gc=8)
    return getattr(cf.CSAKDConfig, preset)(**{**base, **kw})
