"""csakd_fast: CSAKD hyperspectral/multispectral fusion (Hsu et al. 2024) with fused kernels.

The public names are imported on first use (PEP 562), so that ``import csakd_fast`` and the
``csakd-fast`` command's ``--help`` do not import torch: ``csakd_fast.CSAKDNet``,
``csakd_fast.nn.CrossSelfAttention``, ``from csakd_fast import backends`` … import what they name
when they are first reached, and behave as eager imports would from then on.
"""
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# the submodules, imported on first attribute access (``models`` as well: ``csakd_fast.models``
# was reachable after ``import csakd_fast`` when the package imported it eagerly)
_SUBMODULES = ("nn", "ops", "losses", "metrics", "backends", "data", "models")
# name -> the submodule that defines it
_ATTRIBUTES = {"CSAKDConfig": "models", "CSAKDNet": "models", "load_checkpoint": "models",
               "save_checkpoint": "models"}

if _TYPE_CHECKING:   # what the lazy names are, for type checkers, IDEs and the import-graph test
    from . import backends, data, losses, metrics, models, nn, ops
    from .models import CSAKDConfig, CSAKDNet, load_checkpoint, save_checkpoint


def __getattr__(name: str):
    if name == "backends":   # the registry is filled by the op packages: load them with it
        _importlib.import_module(".ops", __name__)
    if name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    elif name in _ATTRIBUTES:
        value = getattr(_importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value   # later look-ups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


__all__ = ["CSAKDConfig", "CSAKDNet", "load_checkpoint", "save_checkpoint", "nn", "ops",
           "losses", "metrics", "backends", "data", "__version__"]
