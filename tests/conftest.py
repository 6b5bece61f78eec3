import importlib.util
import os

import pytest
import torch

# Triton kernels run under the interpreter where there is no GPU; the flag is read when a kernel
# module is imported, so it is set before anything imports csakd_fast's Triton backends.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests use small shapes, where a second intra-op thread gains nothing and, on a loaded 2-core
# machine, OpenMP's spinning barriers make a tiny model 50x slower (measured: 20 s vs 0.37 s for a
# first teacher_large forward+backward). Tests that need threads set them locally.
torch.set_num_threads(1)


def requires(*modules):
    """Mark: skip, naming what is missing, where one of ``modules`` is not installed. They are
    install requirements of csakd_fast; a bare environment (the GPU machine's python runs the
    suite without spectral, earthlib, spyndex, pyrsr, colour-science, matplotlib, Pillow) skips
    the tests that read through them instead of failing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def small(preset="teacher", **kw):
    """A small configuration of a preset (bands=31, msi_bands=3, nf=16, gc=8)."""
    import csakd_fast as cf

    base = dict(bands=31, msi_bands=3, nf=16, gc=8)
    return getattr(cf.CSAKDConfig, preset)(**{**base, **kw})


def csa_layer(C, D, heads, gate, attention, backend, dtype=torch.float64, seed=0):
    """A CrossSelfAttention with seeded weights (and, for normalized, temperatures in [0.5, 2.5])."""
    import csakd_fast as cf

    torch.manual_seed(seed)
    layer = cf.nn.CrossSelfAttention(C, D, heads, gate=gate, attention=attention, backend=backend)
    if attention == "normalized":
        with torch.no_grad():
            layer.temperature.copy_(0.5 + 2 * torch.rand(heads))
    return layer.to(dtype)
