"""The compiled extension ``csakd_fast._C`` (csrc/, kernels/), loaded on first use.

:func:`lib` returns the module, or None when it was not built or fails to load; the first failure
emits one warning (a ``RuntimeWarning`` of one line) and the ``cpp``/``cuda`` backends stay
unavailable, with :data:`why` as the reason that ``backends.resolve`` reports. ``import csakd_fast``
never depends on it.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Optional

_lib: Optional[ModuleType] = None
_tried = False
why: Optional[str] = None


def lib() -> Optional[ModuleType]:
    """The extension module, or None (see :data:`why`)."""
    global _lib, _tried, why
    if not _tried:
        _tried = True
        try:
            _lib = importlib.import_module(f"{__package__}._C")
        except Exception as e:  # ImportError (not built), OSError (a missing libcudart), …
            why = (f"the native extension csakd_fast._C is unavailable ({type(e).__name__}: {e}); "
                   f"rebuild with `pip install -e .` (see README, 'Native backends')")
            warnings.warn(f"csakd_fast: {why}; the cpp/cuda backends are off", RuntimeWarning,
                          stacklevel=2)
    return _lib
