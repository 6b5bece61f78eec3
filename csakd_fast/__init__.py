"""csakd_fast: CSAKD hyperspectral/multispectral fusion (Hsu et al. 2024) with fused kernels."""
from . import backends, losses, metrics, nn, ops
from .models import CSAKDConfig, CSAKDNet, load_checkpoint, save_checkpoint

__version__ = "0.1.0"
__all__ = ["CSAKDConfig", "CSAKDNet", "load_checkpoint", "save_checkpoint", "nn", "ops",
           "losses", "metrics", "backends", "__version__"]
