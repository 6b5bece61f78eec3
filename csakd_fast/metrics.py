"""Quality metrics of HSI fusion, batched: images (B, L, H, W) -> one value per sample (B,).

The paper evaluates on images rescaled to [0, 1] (RMSE on the original radiometric scale: rescale
before calling). Every metric accumulates in float64 and returns float64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks


def _pair(pred, target):
    _checks.tensor("pred", pred, 4)
    _checks.tensor("target", target, 4)
    _checks.same_shape(("target", "pred"), (target, pred))
    _checks.same_device_dtype(("target", "pred"), (target, pred))
    _checks.finite("pred", pred)
    _checks.finite("target", target)
    return pred.detach().double(), target.detach().double()


def _band_mse(x, y):
    return ((x - y) ** 2).flatten(2).mean(-1)  # (B, L)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paper PSNR: mean over bands l of 10·log10(max_p(y_l)² / MSE_l), in dB.

    A band reconstructed exactly has MSE 0 and PSNR +inf, so identical images give +inf
    (no cap); a band whose target is all zero with non-zero error gives −inf."""
    x, y = _pair(pred, target)
    peak = y.flatten(2).amax(-1)
    return (10 * torch.log10(peak ** 2 / _band_mse(x, y))).mean(-1)


def _angles(x, y):
    """Per-pixel angle in radians (B, H, W) and the mask of pixels where both norms are > 0."""
    nx, ny = x.norm(dim=1, keepdim=True), y.norm(dim=1, keepdim=True)
    valid = ((nx > 0) & (ny > 0)).squeeze(1)
    u, v = x / nx.clamp_min(1e-300), y / ny.clamp_min(1e-300)
    ang = 2 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))
    return torch.where(valid, ang, torch.zeros_like(ang)), valid


def sam_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel spectral angle ∠(ŷ_p, y_p) in degrees, (B, H, W) float64 (0 where either
    spectrum has zero norm); :func:`sam` is its mean over the valid pixels."""
    x, y = _pair(pred, target)
    return torch.rad2deg(_angles(x, y)[0])


def sam(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Spectral angle mapper in degrees: mean over pixels p of ∠(ŷ_p, y_p).

    The angle is 2·atan2(‖u − v‖, ‖u + v‖) with u, v the unit spectra (Kahan's form of
    arccos⟨u, v⟩, clamped by construction: exactly 0 for identical or proportional spectra,
    accurate for small angles, never NaN). Pixels where either spectrum has zero norm are
    excluded; a sample with no valid pixel gets 0."""
    x, y = _pair(pred, target)
    ang, valid = _angles(x, y)
    count = valid.flatten(1).sum(-1)
    return torch.rad2deg(ang.flatten(1).sum(-1) / count.clamp_min(1))


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """√(mean over bands and pixels of (ŷ − y)²)."""
    x, y = _pair(pred, target)
    return ((x - y) ** 2).flatten(1).mean(-1).sqrt()


def ergas(pred: torch.Tensor, target: torch.Tensor, scale: float = 4) -> torch.Tensor:
    """ERGAS = (100 / scale) · √(mean over bands l of MSE_l / mean_p(y_l)²); 0 when identical.

    ``scale`` is the resolution ratio (4 in the paper)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    x, y = _pair(pred, target)
    mean = y.flatten(2).mean(-1)
    return (100.0 / scale) * (_band_mse(x, y) / mean ** 2).mean(-1).sqrt()


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0,
         window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) per band, averaged over bands.

    Local statistics under a normalised Gaussian window (11×11, σ = 1.5), 'valid' positions
    only (as in Wang's reference code): SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² +
    σy² + C2)), C1 = (0.01·R)², C2 = (0.03·R)², R = ``data_range`` (1 for [0, 1] images)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window: expected an odd positive window size, got {window!r}")
    for name, v in (("sigma", sigma), ("data_range", data_range)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    x, y = _pair(pred, target)
    B, L, H, W = x.shape
    if H < window or W < window:
        raise ValueError(f"pred: expected H, W >= window={window}, got shape {tuple(pred.shape)}")
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    gh, gw = g.view(1, 1, window, 1), g.view(1, 1, 1, window)

    def blur(t):
        return F.conv2d(F.conv2d(t.reshape(B * L, 1, H, W), gh), gw)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(B, L, -1).mean(-1).mean(-1)


def cc(pred: torch.Tensor, target: torch.Tensor, per_band: bool = False) -> torch.Tensor:
    """Correlation coefficient per band, Pearson over pixels: Σ(ŷ−ȳ̂)(y−ȳ)/√(Σ(ŷ−ȳ̂)²·Σ(y−ȳ)²).

    Returns the mean over bands (B,), or (B, L) with ``per_band``. A band where either image is
    constant has no defined correlation: NaN per band, left out of the mean (NaN if all are)."""
    x, y = _pair(pred, target)
    xc = x.flatten(2) - x.flatten(2).mean(-1, keepdim=True)
    yc = y.flatten(2) - y.flatten(2).mean(-1, keepdim=True)
    den = ((xc * xc).sum(-1) * (yc * yc).sum(-1)).sqrt()
    r = (xc * yc).sum(-1) / den
    r = torch.where(den > 0, r, torch.full_like(r, math.nan))
    return r if per_band else r.nanmean(-1)
