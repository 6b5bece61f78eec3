"""Fusion of new LR-HSI / HR-MSI pairs with a trained model (``csakd-fast fuse``).

Normalisation at inference: the network was trained on [−1, 1] data scaled with the HR-HSI
cube's own (vmin, vmax) (:mod:`csakd_fast.data.normalization`). A new pair has no HR-HSI, so both
inputs are scaled with the LR-HSI's (vmin, vmax) — the LR-HSI is the blurred HR-HSI, whose range
is the closest estimate available — and the output is mapped back with the same pair. The HR-MSI
must be in the same radiometric units as the LR-HSI (reflectance with reflectance, as an SRF
with rows summing to 1 produces).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import _checks
from ..data.normalization import denormalize
from ..data.readers import ENVI_DATA_SUFFIXES, read_cube, write_cube


@torch.no_grad()
def fuse(model, lr_hsi: np.ndarray, hr_msi: np.ndarray, device="cpu") -> np.ndarray:
    """HR-HSI (H, W, L) float32 on the inputs' scale from lr_hsi (h, w, L) and hr_msi (H, W, M)."""
    cfg = model.config
    for name, a, bands in (("lr_hsi", lr_hsi, cfg.bands), ("hr_msi", hr_msi, cfg.msi_bands)):
        if not isinstance(a, np.ndarray) or a.ndim != 3:
            raise ValueError(f"{name}: expected an (H, W, bands) array, got "
                             f"{getattr(a, 'shape', type(a).__name__)}")
        if a.shape[2] != bands:
            raise ValueError(f"{name}: the model takes {bands} bands, got {a.shape[2]} (shape {a.shape})")
    h, w = lr_hsi.shape[:2]
    want = (cfg.scale * h, cfg.scale * w)
    if hr_msi.shape[:2] != want:
        raise ValueError(f"hr_msi: expected {want[0]}×{want[1]} pixels (scale {cfg.scale} × the "
                         f"LR-HSI's {h}×{w}), got {hr_msi.shape[0]}×{hr_msi.shape[1]}")
    vmin, vmax = float(lr_hsi.min()), float(lr_hsi.max())
    if not vmax > vmin:
        raise ValueError(f"lr_hsi: expected an image with a range (max > min), got the constant {vmin}")
    dtype = next(model.parameters()).dtype

    def signed(a):
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float64))
        return ((t - vmin) / (vmax - vmin) * 2 - 1)[None].to(device=device, dtype=dtype)

    was_training = model.training
    model.eval()
    try:
        pred = model(signed(lr_hsi), signed(hr_msi))[0]
    finally:
        model.train(was_training)
    out = denormalize(pred.double(), vmin, vmax)[0].permute(1, 2, 0)
    return out.float().cpu().numpy()


def default_output(lr_path: Path) -> Path:
    """<stem>_fused in the LR-HSI's format (a PNG folder's float result goes to TIFF)."""
    lr_path = Path(lr_path)
    if lr_path.is_dir():
        return lr_path.with_name(lr_path.name + "_fused.tif")
    suffix = ".hdr" if lr_path.suffix.lower() in ENVI_DATA_SUFFIXES else lr_path.suffix
    return lr_path.with_name(lr_path.stem + "_fused" + suffix)


def fuse_files(checkpoint, lr_hsi, hr_msi, out=None, *, device="auto", backend="auto", key=None,
               band_axis=None) -> Path:
    """Read the pair, fuse it with the model of ``checkpoint`` and write the HR-HSI (the LR-HSI's
    wavelengths are kept where the format stores them). Returns the written path.
    ``backend``: a name for every fused op, {op: name} or "csa=cpp,clra=torch" (``load_checkpoint``)."""
    from ..models import load_checkpoint
    from ..training.trainer import resolve_device

    _checks.choice("device", device, ("auto", "cpu", "cuda"))
    dev = resolve_device(device)
    model = load_checkpoint(checkpoint, backend=backend).to(dev)
    lr = read_cube(lr_hsi, key=key, band_axis=band_axis)
    msi = read_cube(hr_msi, key=key, band_axis=band_axis)
    fused = fuse(model, lr.data, msi.data, dev)
    out = Path(out) if out is not None else default_output(Path(lr_hsi))
    wl = lr.wavelengths if out.suffix.lower() != ".npy" else None
    return write_cube(out, fused, wl)
