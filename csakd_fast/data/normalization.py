"""The paper's normalisation (its public dataset code), made explicit and invertible.

Each HR-HSI cube c is scaled with its own range (vmin, vmax) = (min c, max c) over all bands and
pixels::

    unit   = (c − vmin) / (vmax − vmin)        ∈ [0, 1]   metrics are computed on this scale
    signed = 2·unit − 1                        ∈ [−1, 1]  what the network sees and predicts

The LR-HSI and HR-MSI are simulated from ``unit`` and mapped to [−1, 1] the same way (with the
cube's (vmin, vmax)); a prediction ŝ maps back with ``denormalize(ŝ, vmin, vmax)`` = (ŝ + 1)/2 ·
(vmax − vmin) + vmin, on which RMSE "on the original scale" is computed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["normalize", "denormalize", "to_unit", "to_signed"]


def normalize(cube: np.ndarray, name: str = "cube") -> tuple[np.ndarray, float, float]:
    """(H, W, L) cube -> (unit cube in [0, 1] float32, vmin, vmax) with vmin/vmax as Python floats
    (computed in float64). A constant cube has no range and is refused."""
    if not isinstance(cube, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(cube).__name__}")
    vmin, vmax = float(np.min(cube)), float(np.max(cube))
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"{name}: expected finite values, got min {vmin} and max {vmax}")
    if vmax <= vmin:
        raise ValueError(f"{name}: expected a cube with a range (max > min) to normalise, got the "
                         f"constant {vmin!r}")
    unit = (cube.astype(np.float64, copy=False) - vmin) / (vmax - vmin)
    return unit.astype(np.float32), vmin, vmax


def _bcast(v, x):
    """vmin/vmax as a scalar, or one per sample (B,) broadcast over x's trailing dims."""
    if np.ndim(v) == 0:
        return float(v)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if hasattr(x, "new_tensor"):   # torch
        import torch

        v = torch.as_tensor(v, dtype=x.dtype if x.is_floating_point() else None, device=x.device)
        if v.numel() != x.shape[0]:
            raise ValueError(f"vmin/vmax: expected a scalar or one value per sample ({x.shape[0]}), "
                             f"got {v.numel()} values")
        return v.reshape(shape)
    v = np.asarray(v, dtype=np.float64)
    if v.size != x.shape[0]:
        raise ValueError(f"vmin/vmax: expected a scalar or one value per sample ({x.shape[0]}), "
                         f"got {v.size} values")
    return v.reshape(shape)


def to_unit(x):
    """[−1, 1] -> [0, 1]: (x + 1) / 2 (numpy or torch)."""
    return (x + 1) / 2


def to_signed(x):
    """[0, 1] -> [−1, 1]: 2x − 1 (numpy or torch)."""
    return x * 2 - 1


def denormalize(x, vmin, vmax):
    """Map a [−1, 1] array/tensor back to the cube's original scale: (x + 1)/2 · (vmax − vmin) + vmin.

    ``vmin``/``vmax`` are scalars, or one per sample (shape (B,), as a DataLoader collates them)
    for a batch x (B, ...). Works on numpy arrays and torch tensors (result in x's type)."""
    lo, hi = _bcast(vmin, x), _bcast(vmax, x)
    return to_unit(x) * (hi - lo) + lo
