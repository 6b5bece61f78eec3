"""csakd_fast: CSAKD hyperspectral/multispectral fusion (Hsu et al. 2024) with fused kernels."""
from . import backends, losses, metrics, nn, ops
from .models import CSAKDConfig, CSAKDNet, load_checkpoint, save_checkpoint

__version__ = "0.1.0"


def __getattr__(name):
    # csakd_fast.data pulls scipy, h5py, spectral, …: imported on first use, not by `import csakd_fast`
    if name == "data":
        import importlib

        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
__all__ = ["CSAKDConfig", "CSAKDNet", "load_checkpoint", "save_checkpoint", "nn", "ops",
           "losses", "metrics", "backends", "data", "__version__"]
