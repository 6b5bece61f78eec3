"""Wald's protocol: simulate an (LR-HSI, HR-MSI) pair from an HR-HSI cube.

Cubes are channel-last numpy arrays (H, W, L)::

    LR-HSI = decimate_s(PSF ∗ HR)  (+ noise)      (h, w, L) = (H/s, W/s, L)
    HR-MSI = HR · SRFᵀ             (+ noise)      (H, W, M), SRF an (M, L) matrix

**Geometry.** LR pixel (i, j) covers the HR block [i·s, (i+1)·s) × [j·s, (j+1)·s) and is the
PSF-weighted mean of the HR pixels around the block's centre c = (i·s + (s−1)/2, j·s + (s−1)/2).
This is the footprint that bilinear upsampling with ``align_corners=False`` (the network's ``up``)
and area pooling assume, and the one of Yokoya's ``gaussian_down_sample``. Because the PSF is
symmetric about the block centre, flips and 90° rotations of a cube whose sides are multiples of s
commute with the degradation, and a crop aligned to s of the degraded pair is the degraded crop
(up to the image border).

**PSF default.** An isotropic Gaussian whose full width at half maximum equals the scale factor,
σ = s / (2√(2 ln 2)) ≈ 0.4247·s (1.699 HR pixels for ×4), as in N. Yokoya, C. Grohnfeldt and
J. Chanussot, "Hyperspectral and multispectral data fusion: a comparative review of the recent
literature", IEEE Geosci. Remote Sens. Mag. 5(2):29–56, 2017 (their simulation code
``gaussian_down_sample.m``: ``sig = w/2.35482`` with w the GSD ratio). It is sampled at the HR pixel
centres within ``truncate``·σ of the centre (4σ, scipy.ndimage.gaussian_filter's default) and
normalised to sum 1 per axis; the 2-D PSF is the outer product. Borders are extended half-sample
symmetrically (… b a | a b …), which keeps constants constant and commutes with flips.

**Misregistration** of the LR-HSI by (dy, dx) HR pixels (any real numbers) moves the PSF centre to
c − (dy, dx): LR(i, j) = Σ_p g(p − c_ij + d) HR(p). The Gaussian is sampled analytically at the
shifted centre, so a sub-pixel shift needs no interpolation of the image (neither Fourier nor
bilinear resampling, which would ring or smooth); an integer shift equals degrading
``np.roll(HR, (dy, dx), axis=(0, 1))`` away from the border. Positive dy moves the LR content down.

**Noise.** White Gaussian noise at an SNR in dB: σ_n² = mean(x²) / 10^(SNR/10), the signal power
taken over the whole array given, as the paper's ``awgn``.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

__all__ = [
    "fwhm_sigma", "gaussian_psf", "psf_kernel2d", "blur", "decimate", "spatial_degrade",
    "apply_srf", "add_noise", "resolve_srf", "simulate_pair", "Degraded",
]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))   # 2.35482


class Degraded(NamedTuple):
    lr_hsi: np.ndarray   # (H/s, W/s, L)
    hr_msi: np.ndarray   # (H, W, M)


# ------------------------------------------------------------------ argument checks

def _shape(a) -> str:
    return "(" + ", ".join(str(d) for d in a.shape) + ")"


def _scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1, got {scale!r}")
    return int(scale)


def _positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
    return float(v)


def _snr(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite SNR in dB (a real number), got {v!r}")
    return float(v)


def _shift(name: str, v) -> tuple[float, float]:
    try:
        dy, dx = v
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (dy, dx) of HR-pixel shifts, got {v!r}") from None
    for c in (dy, dx):
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c):
            raise ValueError(f"{name}: expected a pair of finite numbers (dy, dx), got {v!r}")
    return float(dy), float(dx)


def _cube(name: str, x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array (H, W, L), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D array (H, W, L), got shape {_shape(x)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
    if min(x.shape) == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {_shape(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got {int((~np.isfinite(x)).sum())} NaN/Inf "
                         f"entries in shape {_shape(x)}")
    return x


def _out_dtype(x: np.ndarray):
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32


# ------------------------------------------------------------------ the PSF

def fwhm_sigma(scale: int) -> float:
    """σ of the Gaussian whose FWHM equals ``scale`` HR pixels: s / (2√(2 ln 2))."""
    return _scale(scale) / _FWHM_PER_SIGMA


def gaussian_psf(scale: int, sigma: float | None = None, *, shift: float = 0.0,
                 truncate: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D PSF of one LR pixel along one axis, as (weights (K,) float64, offsets (K,) int64).

    LR(i) = Σ_t weights[t] · HR(i·s + offsets[t]): the offsets are HR pixels relative to the first
    HR pixel of the LR pixel's block, weights[t] ∝ exp(−(offsets[t] − c)² / 2σ²) with centre
    c = (s−1)/2 − shift, over all integer offsets within max(truncate·σ, 1) of c, summing to 1.
    With shift = 0 the taps are symmetric about the block centre. ``sigma`` defaults to
    :func:`fwhm_sigma` (FWHM = s)."""
    s = _scale(scale)
    sigma = fwhm_sigma(s) if sigma is None else _positive("sigma", sigma)
    truncate = _positive("truncate", truncate)
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift):
        raise ValueError(f"shift: expected a finite number of HR pixels, got {shift!r}")
    centre = (s - 1) / 2.0 - float(shift)
    radius = max(truncate * sigma, 1.0)
    offsets = np.arange(math.ceil(centre - radius - 1e-9), math.floor(centre + radius + 1e-9) + 1,
                        dtype=np.int64)
    w = np.exp(-((offsets - centre) ** 2) / (2.0 * sigma * sigma))
    return w / w.sum(), offsets


def psf_kernel2d(scale: int, sigma: float | None = None, *, truncate: float = 4.0) -> np.ndarray:
    """The 2-D PSF (K, K) float64 (outer product of :func:`gaussian_psf`), sums to 1."""
    w, _ = gaussian_psf(scale, sigma, truncate=truncate)
    return np.outer(w, w)


def _filter_axis(x: np.ndarray, axis: int, weights, offsets, stride: int, start: int,
                 n_out: int) -> np.ndarray:
    """out[i] = Σ_t w[t] · x[start + i·stride + offsets[t]] along ``axis``, float64, with the input
    extended half-sample symmetrically beyond its ends."""
    n = x.shape[axis]
    lo = start + int(offsets.min())
    hi = start + (n_out - 1) * stride + int(offsets.max())
    before, after = max(0, -lo), max(0, hi - (n - 1))
    pad = [(0, 0)] * x.ndim
    pad[axis] = (before, after)
    xp = np.pad(x, pad, mode="symmetric") if (before or after) else x
    shape = list(x.shape)
    shape[axis] = n_out
    out = np.zeros(shape, dtype=np.float64)
    idx = [slice(None)] * x.ndim
    for w, o in zip(weights, offsets):
        first = start + int(o) + before
        idx[axis] = slice(first, first + (n_out - 1) * stride + 1, stride)
        out += w * xp[tuple(idx)]
    return out


def _check_multiple(x: np.ndarray, s: int, name: str) -> None:
    H, W = x.shape[:2]
    if H % s or W % s:
        raise ValueError(f"{name}: expected height and width multiples of scale={s}, got shape "
                         f"{_shape(x)} (crop or pad the cube first)")


def blur(x: np.ndarray, scale: int = 4, sigma: float | None = None, *,
         shift: tuple[float, float] = (0.0, 0.0), truncate: float = 4.0) -> np.ndarray:
    """PSF-filtered cube at full resolution (H, W, L), on the grid that :func:`decimate` samples:
    out(n) = Σ_t w[t] · x(n − ⌊(s−1)/2⌋ + offsets[t]) per axis, so that
    ``decimate(blur(x), s) == spatial_degrade(x, s)``. (For even s this grid sits half an HR pixel
    off the input's: out(n) is centred at n + ½ − shift.)"""
    s = _scale(scale)
    x = _cube("x", x)
    dy, dx = _shift("shift", shift)
    out = x
    for axis, d in ((0, dy), (1, dx)):
        w, o = gaussian_psf(s, sigma, shift=d, truncate=truncate)
        out = _filter_axis(out, axis, w, o, 1, -((s - 1) // 2), x.shape[axis])
    return out.astype(_out_dtype(x), copy=False)


def decimate(x: np.ndarray, scale: int = 4) -> np.ndarray:
    """Keep every s-th sample of each spatial axis, from ⌊(s−1)/2⌋: x[o::s, o::s] (a view).
    H and W must be multiples of s."""
    s = _scale(scale)
    if not isinstance(x, np.ndarray) or x.ndim < 2:
        raise ValueError(f"x: expected a numpy array (H, W, ...), got {type(x).__name__}")
    _check_multiple(x, s, "x")
    o = (s - 1) // 2
    return x[o::s, o::s]


def spatial_degrade(x: np.ndarray, scale: int = 4, sigma: float | None = None, *,
                    shift: tuple[float, float] = (0.0, 0.0), truncate: float = 4.0) -> np.ndarray:
    """LR-HSI without noise: decimate_s(PSF ∗ x), (H, W, L) -> (H/s, W/s, L), computed at the LR
    samples only (separable, accumulated in float64, returned in x's float dtype)."""
    s = _scale(scale)
    x = _cube("x", x)
    _check_multiple(x, s, "x")
    return _spatial_degrade(x, s, sigma, _shift("shift", shift), truncate)


_CHUNK = 1 << 22   # elements of float64 scratch per chunk (32 MiB): large cubes in band/row slabs


def _spatial_degrade(x, s, sigma, shift, truncate):
    taps = [gaussian_psf(s, sigma, shift=d, truncate=truncate) for d in shift]
    H, W, L = x.shape
    out = np.empty((H // s, W // s, L), dtype=_out_dtype(x))
    step = max(1, _CHUNK // (H * W))   # bands are independent: filter a slab of them at a time
    for b in range(0, L, step):
        y = x[:, :, b:b + step]
        for axis, (w, o) in enumerate(taps):
            y = _filter_axis(y, axis, w, o, s, 0, x.shape[axis] // s)
        out[:, :, b:b + step] = y
    return out


# ------------------------------------------------------------------ spectral response, noise

def apply_srf(x: np.ndarray, srf) -> np.ndarray:
    """HR-MSI without noise: per pixel y_p = SRF · x_p, (H, W, L) · (M, L)ᵀ -> (H, W, M),
    accumulated in float64, returned in x's float dtype."""
    return _apply_srf(_cube("x", x), srf)


def _apply_srf(x, srf):
    srf = np.asarray(srf)
    if srf.ndim != 2 or srf.shape[1] != x.shape[2]:
        raise ValueError(f"srf: expected an (M, {x.shape[2]}) matrix (L = the cube's bands), "
                         f"got shape {_shape(srf)}")
    if not np.isfinite(srf).all():
        raise ValueError("srf: expected finite values")
    srf_t = srf.astype(np.float64).T
    H, W, L = x.shape
    out = np.empty((H, W, srf.shape[0]), dtype=_out_dtype(x))
    step = max(1, _CHUNK // (W * L))   # pixels are independent: a slab of rows at a time
    for r in range(0, H, step):
        out[r:r + step] = x[r:r + step].astype(np.float64) @ srf_t
    return out


def add_noise(x, snr_db: float, rng=None):
    """x + white Gaussian noise with σ² = mean(x²) / 10^(snr_db/10) (power over the whole array).

    ``x`` a numpy array (``rng``: a ``numpy.random.Generator``, an int seed, or None for fresh
    entropy) or a torch tensor (``rng``: a ``torch.Generator`` or None for torch's global RNG).
    Returns a new array/tensor of x's dtype. An all-zero x has no defined SNR and is returned
    unchanged (a copy)."""
    snr = _snr("snr_db", snr_db)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        if rng is not None and not isinstance(rng, torch.Generator):
            raise ValueError(f"rng: expected a torch.Generator or None for a tensor, got {type(rng).__name__}")
        power = float(x.detach().double().pow(2).mean())
        std = math.sqrt(power / 10.0 ** (snr / 10.0))
        noise = torch.randn(x.shape, generator=rng, dtype=x.dtype, device=x.device)
        return x + noise * std
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x: expected a floating numpy array or torch tensor, got "
                         f"{type(x).__name__}{'' if not isinstance(x, np.ndarray) else ' of dtype ' + str(x.dtype)}")
    if rng is None or isinstance(rng, numbers.Integral):
        rng = np.random.default_rng(rng)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
    power = float(np.mean(np.square(x, dtype=np.float64)))
    std = math.sqrt(power / 10.0 ** (snr / 10.0))
    return (x + std * rng.standard_normal(x.shape)).astype(x.dtype, copy=False)


def resolve_srf(srf, wavelengths=None) -> np.ndarray:
    """An SRF as an (M, L) float64 matrix whose rows sum to 1.

    ``srf`` is a sensor name (resolved with ``csakd_fast.data.srf.srf_matrix(sensor, wavelengths)``,
    which needs the cube's band centres ``wavelengths`` in nm) or a matrix (numpy/torch/nested
    lists): non-negative, each row with a positive sum. A matrix's rows are divided by their sums,
    so that each MSI band is a weighted mean of HSI bands and an HR-MSI simulated from a [0, 1] cube
    stays in [0, 1]."""
    if isinstance(srf, str):
        if wavelengths is None:
            raise ValueError(f"wavelengths: the SRF of sensor {srf!r} is resampled onto the cube's band "
                             "centres (nm); pass wavelengths (or cubes that carry them)")
        from .srf import srf_matrix   # resolved lazily: the sensor tables live in their own module

        m = np.asarray(srf_matrix(srf, np.asarray(wavelengths, dtype=np.float64)), dtype=np.float64)
    else:
        if hasattr(srf, "detach"):
            srf = srf.detach().cpu().numpy()
        try:
            m = np.array(srf, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"srf: expected a sensor name or an (M, L) matrix, got {type(srf).__name__}") from None
    if m.ndim != 2 or min(m.shape) == 0:
        raise ValueError(f"srf: expected an (M, L) matrix, got shape {_shape(m)}")
    if not np.isfinite(m).all():
        raise ValueError("srf: expected finite values")
    if (m < 0).any():
        raise ValueError(f"srf: expected non-negative responses, got minimum {m.min():.6g}")
    sums = m.sum(axis=1)
    if (sums <= 0).any():
        rows = np.flatnonzero(sums <= 0).tolist()
        raise ValueError(f"srf: expected every MSI band (row) to have a positive total response, "
                         f"rows {rows} sum to 0")
    if wavelengths is not None and m.shape[1] != len(np.atleast_1d(wavelengths)):
        raise ValueError(f"srf: expected {len(np.atleast_1d(wavelengths))} columns (the cube's bands), "
                         f"got shape {_shape(m)}")
    return m / sums[:, None]


def simulate_pair(hr: np.ndarray, srf, scale: int = 4, *, sigma: float | None = None,
            misregistration: tuple[float, float] = (0.0, 0.0), snr_lr: float | None = None,
            snr_msi: float | None = None, rng=None, truncate: float = 4.0) -> Degraded:
    """Wald's protocol on one HR-HSI cube (H, W, L), H and W multiples of ``scale``.

    Returns ``Degraded(lr_hsi (H/s, W/s, L), hr_msi (H, W, M))`` in hr's float dtype (float32 for
    integer input). ``srf`` is an (M, L) matrix applied as given (see :func:`resolve_srf` to build
    one from a sensor name or to row-normalise). ``misregistration`` (dy, dx) in HR pixels shifts
    the LR-HSI's PSF (see the module doc). ``snr_lr`` / ``snr_msi`` (dB, None = no noise) add white
    Gaussian noise to each, drawn from ``rng`` (numpy Generator or int seed): LR first, then MSI."""
    s = _scale(scale)
    hr = _cube("hr", hr)
    if hr.shape[0] % s or hr.shape[1] % s:
        raise ValueError(f"hr: expected height and width multiples of scale={s}, got shape "
                         f"{_shape(hr)} (crop the cube to a multiple of the scale first)")
    shift = _shift("misregistration", misregistration)
    if snr_lr is not None:
        _snr("snr_lr", snr_lr)
    if snr_msi is not None:
        _snr("snr_msi", snr_msi)
    if sigma is not None:
        _positive("sigma", sigma)
    lr = _spatial_degrade(hr, s, sigma, shift, truncate)
    msi = _apply_srf(hr, srf)
    if snr_lr is not None or snr_msi is not None:
        if rng is None or isinstance(rng, numbers.Integral):
            rng = np.random.default_rng(rng)
        if snr_lr is not None:
            lr = add_noise(lr, snr_lr, rng)
        if snr_msi is not None:
            msi = add_noise(msi, snr_msi, rng)
    return Degraded(lr, msi)
