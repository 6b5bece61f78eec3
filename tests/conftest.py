import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def small(preset="teacher", **kw):
    """A small configuration of a preset (bands=31, msi_bands=3, nf=16, gc=8)."""
    import csakd_fast as cf

    base = dict(bands=31, msi_bands=3, nf=16, gc=8)
    return getattr(cf.CSAKDConfig, preset)(**{**base, **kw})
