"""``FusionDataset``: (LR-HSI, HR-MSI, HR-HSI) samples from HR-HSI cubes, for training and evaluation.

Data flow, per cube (once, at construction):

1. read it (paths go through :func:`~csakd_fast.data.readers.read_cube`), trim H and W down to
   multiples of the scale s (with a warning when that drops pixels);
2. normalise it with its own (vmin, vmax) to ``unit`` ∈ [0, 1] (:mod:`~csakd_fast.data.normalization`);
3. simulate the noise-free LR-HSI (h, w, L) and HR-MSI (H, W, M) from ``unit`` with
   :func:`~csakd_fast.data.degrade.simulate_pair` (Gaussian PSF, FWHM = s; the SRF row-normalised).

The degradation is precomputed per whole cube, as the paper's public code does, rather than per
crop: training crops are aligned to s (top-left corner and size multiples of s), so the LR crop
``lr[y/s:(y+C)/s]`` is exactly the degradation of the HR crop's neighbourhood, without the border
artefacts a per-crop degradation would put at every crop edge; and the work is done once, not every
step.

Per item:

- ``mode="train"``: a random aligned crop of size C (``crop_size``) from a cube, then (``augment``)
  a horizontal flip, a vertical flip (each with probability ½) and a rotation by k·90°, k uniform in
  {0, 1, 2, 3} (so every element of the square's symmetry group is equally likely), applied to all
  three arrays alike: the PSF is symmetric about each LR pixel's block centre, so the augmented LR
  stays the exact degradation of the augmented HR. Then white Gaussian noise at ``snr_lr`` dB
  (default 35, the paper's) on the [0, 1] LR crop, signal power = mean of its squares, fresh per
  sample; ``snr_msi`` likewise on the HR-MSI (default none). ``len`` = ``crops_per_epoch``
  (default Σ over cubes of ⌊H/C⌋·⌊W/C⌋, at least 1 each); item i draws from cube k with
  probability ∝ H_k·W_k, stratified over i.
- ``mode="eval"``: whole cubes, or fixed tiles of ``tile`` pixels (a grid from the top-left corner,
  the last row/column of tiles moved back to end at the border, so tiles may overlap there); no
  augmentation; noise only when ``snr_lr``/``snr_msi`` are given, then the same on every pass.

Each item is a dict of float32 tensors in [−1, 1] (2·unit − 1), channel-first:
``{"lr_hsi": (L, C/s, C/s), "hr_msi": (M, C, C), "hr_hsi": (L, C, C), "name": str,
"vmin": float, "vmax": float}``; ``denormalize(x, vmin, vmax)`` maps a prediction back to the
cube's original scale (the DataLoader collates vmin/vmax to (B,) float64 tensors, which
``denormalize`` broadcasts).

Determinism: every random draw of item i comes from ``numpy.random.default_rng`` seeded by
(``seed``, epoch, i), so a sample depends only on those three, whichever worker computes it or in
whatever order. Call ``set_epoch(e)`` before each epoch for new crops (with
``persistent_workers=True`` the workers keep the epoch they were started with).
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .degrade import add_noise, resolve_srf, simulate_pair
from .normalization import denormalize, normalize, to_signed, to_unit
from .readers import Cube, read_cube, _wavelength_vector

__all__ = ["FusionDataset", "denormalize", "normalize", "to_unit", "to_signed"]

_DEFAULT = object()


@dataclass(eq=False)
class _Prepared:
    name: str
    hr: np.ndarray          # (H, W, L) float32 in [0, 1]
    lr: np.ndarray          # (H/s, W/s, L) float32, noise-free
    msi: np.ndarray         # (H, W, M) float32, noise-free
    vmin: float
    vmax: float
    wavelengths: np.ndarray | None


def _int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _multiple(name, v, s):
    v = _int(name, v)
    if v % s:
        raise ValueError(f"{name}: expected a multiple of scale={s}, got {v}")
    return v


def _snr_or_none(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name}: expected an SNR in dB (a finite number) or None, got {v!r}")
    return float(v)


class FusionDataset(torch.utils.data.Dataset):
    """Fusion samples simulated from HR-HSI cubes (see the module doc for the data flow).

    Args:
        cubes: one source or a sequence of them: a path (any format :func:`read_cube` reads), a
            :class:`Cube`, a reference scene (an object with ``cube`` (H, W, L), ``wavelengths``
            and ``name``), or an (H, W, L) numpy array / torch tensor (channel-last).
        srf: the MSI spectral response: an (M, L) matrix (rows are normalised to sum 1), or a
            sensor name resolved per cube with ``csakd_fast.data.srf.srf_matrix`` on the cube's
            wavelengths.
        wavelengths: band centres in nm (L,) (or ``"cave"``) for cubes that do not carry their own;
            checked against those that do.
        scale: the spatial ratio s (4 in the paper).
        mode: ``"train"`` (random augmented crops) or ``"eval"`` (whole cubes or tiles).
        crop_size: training crop C, a multiple of s (the paper: 128).
        crops_per_epoch: ``len`` in training (default: about one pass over every cube).
        augment: flips and 90° rotations in training.
        snr_lr, snr_msi: noise in dB on the LR-HSI / HR-MSI (default: 35 / None in training,
            None / None in evaluation).
        sigma, misregistration: the PSF σ (default: FWHM = s) and the LR-HSI shift (dy, dx) in
            HR pixels, passed to :func:`simulate_pair`.
        tile: evaluation tile size (a multiple of s) or None for whole cubes.
        seed: the seed of every random draw.
        names: names of the cubes (default: scene names, file stems, ``cube<i>``).
        reader_kwargs: keyword arguments for :func:`read_cube` (``key``, ``band_axis``).

    Attributes: ``bands`` (L), ``msi_bands`` (M), ``scale``, ``mode``, ``names``, ``epoch``,
    ``srf`` (the row-normalised (M, L) matrix used; None when a sensor's SRF differs between cubes
    with different wavelength grids), ``cube_info(k)`` (name, shape, vmin, vmax, wavelengths).
    """

    def __init__(self, cubes, srf, *, wavelengths=None, scale: int = 4, mode: str = "train",
                 crop_size: int = 128, crops_per_epoch: int | None = None, augment: bool = True,
                 snr_lr: Any = _DEFAULT, snr_msi: float | None = None, sigma: float | None = None,
                 misregistration: tuple[float, float] = (0.0, 0.0), tile: int | None = None,
                 seed: int = 0, names: Sequence[str] | None = None, reader_kwargs: dict | None = None):
        super().__init__()
        if mode not in ("train", "eval"):
            raise ValueError(f"mode: expected one of 'train', 'eval', got {mode!r}")
        self.mode = mode
        self.scale = s = _int("scale", scale)
        self.seed = _int("seed", seed, minimum=0)
        self.augment = bool(augment)
        self.snr_lr = _snr_or_none("snr_lr", (35.0 if mode == "train" else None) if snr_lr is _DEFAULT else snr_lr)
        self.snr_msi = _snr_or_none("snr_msi", snr_msi)
        self.epoch = 0
        sources = self._as_list(cubes)
        if not sources:
            raise ValueError("cubes: expected at least one cube, got none")
        if names is not None and (isinstance(names, str) or len(names) != len(sources)):
            raise ValueError(f"names: expected {len(sources)} names (one per cube), got {names!r}")
        if mode == "train":   # cheap checks first: the cubes are degraded below
            crop_size = _multiple("crop_size", crop_size, s)
        elif tile is not None:
            tile = _multiple("tile", tile, s)
        reader_kwargs = dict(reader_kwargs or {})
        if "wavelengths" in reader_kwargs:
            raise ValueError("reader_kwargs: pass wavelengths as FusionDataset(wavelengths=...)")

        self._prepare(sources, srf, wavelengths, names, reader_kwargs, sigma, misregistration)
        if mode == "train":
            self._index_crops(crop_size, crops_per_epoch)
        else:
            self._index_tiles(tile)

    # ------------------------------------------------------------------ construction helpers

    def _prepare(self, sources, srf, wavelengths, names, reader_kwargs, sigma, misregistration) -> None:
        """Read, trim, normalise and degrade every cube (``_cubes``); set ``bands``,
        ``msi_bands`` and ``srf``."""
        s = self.scale
        srf_fixed = None if isinstance(srf, str) else resolve_srf(srf)
        srf_cache: dict[tuple, np.ndarray] = {}
        self._cubes: list[_Prepared] = []
        for i, src in enumerate(sources):
            name, data, wl = self._load(src, i, wavelengths, reader_kwargs)
            if names is not None:
                name = str(names[i])
            data = self._trim(name, data, s)
            if self._cubes and data.shape[2] != self._cubes[0].hr.shape[2]:
                raise ValueError(f"cubes: expected the same number of bands in every cube, got "
                                 f"{self._cubes[0].hr.shape[2]} in {self._cubes[0].name!r} and "
                                 f"{data.shape[2]} in {name!r}")
            m = self._cube_srf(name, data.shape[2], wl, srf, srf_fixed, srf_cache)
            unit, vmin, vmax = normalize(data, name=f"cube {name!r}")
            del data
            lr, msi = simulate_pair(unit, m, s, sigma=sigma, misregistration=misregistration)
            self._cubes.append(_Prepared(name, unit, lr, msi, vmin, vmax, wl))

        msi_bands = {c.msi.shape[2] for c in self._cubes}
        if len(msi_bands) > 1:   # a sensor that does not cover every cube's range the same way
            raise ValueError("srf: expected the same number of MSI bands for every cube, got "
                             + ", ".join(f"{c.name}: {c.msi.shape[2]}" for c in self._cubes))
        self.bands, self.msi_bands = self._cubes[0].hr.shape[2], msi_bands.pop()
        self.srf = srf_fixed if srf_fixed is not None else (next(iter(srf_cache.values())) if len(srf_cache) == 1 else None)

    @staticmethod
    def _cube_srf(name, bands, wl, srf, srf_fixed, srf_cache) -> np.ndarray:
        """The (M, L) SRF of one cube: the given matrix, or the sensor's on the cube's wavelengths
        (one matrix per wavelength grid, in ``srf_cache``)."""
        if srf_fixed is not None:
            if srf_fixed.shape[1] != bands:
                raise ValueError(f"srf: expected an (M, {bands}) matrix for cube {name!r} "
                                 f"with {bands} bands, got shape ({srf_fixed.shape[0]}, {srf_fixed.shape[1]})")
            return srf_fixed
        if wl is None:
            raise ValueError(f"wavelengths: cube {name!r} has no band centres; the SRF of "
                             f"sensor {srf!r} needs them (pass wavelengths=)")
        k = tuple(np.round(wl, 9).tolist())
        if k not in srf_cache:
            srf_cache[k] = resolve_srf(srf, wl)
        return srf_cache[k]

    def _index_crops(self, crop_size: int, crops_per_epoch) -> None:
        """Training: the crop size, ``len`` and the area-proportional choice of cubes."""
        self.crop_size = C = crop_size
        for c in self._cubes:
            if min(c.hr.shape[:2]) < C:
                raise ValueError(f"crop_size: expected at most the smallest cube side; cube {c.name!r} "
                                 f"is {c.hr.shape[0]}×{c.hr.shape[1]}, crop_size is {C}")
        default_len = sum(max(1, (c.hr.shape[0] // C) * (c.hr.shape[1] // C)) for c in self._cubes)
        self.crops_per_epoch = default_len if crops_per_epoch is None else _int("crops_per_epoch", crops_per_epoch)
        area = np.array([c.hr.shape[0] * c.hr.shape[1] for c in self._cubes], dtype=np.float64)
        self._cum_area = np.cumsum(area) / area.sum()
        self.tile = None

    def _index_tiles(self, tile) -> None:
        """Evaluation: the items, (cube, y, x, height, width) of each whole cube or tile."""
        self.crop_size = None
        self.tile = tile
        self._tiles = [(k, y, x, th, tw) for k, c in enumerate(self._cubes)
                       for (y, th) in self._starts(c.hr.shape[0], tile)
                       for (x, tw) in self._starts(c.hr.shape[1], tile)]

    @staticmethod
    def _as_list(cubes) -> list:
        if isinstance(cubes, (str, Path, np.ndarray, Cube, torch.Tensor)) or hasattr(cubes, "cube"):
            return [cubes]
        return list(cubes)

    @staticmethod
    def _load(src, i, wavelengths, reader_kwargs):
        if isinstance(src, (str, Path)):
            cube = read_cube(src, wavelengths=wavelengths, **reader_kwargs)
            return cube.name, cube.data, cube.wavelengths
        if isinstance(src, Cube):
            name, data, wl = src.name if src.path is not None else f"cube{i}", src.data, src.wavelengths
        elif hasattr(src, "cube"):      # a reference Scene (name, cube, wavelengths)
            name, data, wl = str(getattr(src, "name", f"cube{i}")), src.cube, getattr(src, "wavelengths", None)
        elif isinstance(src, (np.ndarray, torch.Tensor)):
            name, data, wl = f"cube{i}", src, None
        else:
            raise ValueError(f"cubes[{i}]: expected a path, Cube, scene or (H, W, L) array, got {type(src).__name__}")
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        data = np.asarray(data)
        if data.ndim != 3 or min(data.shape) == 0:
            raise ValueError(f"cubes[{i}] ({name!r}): expected a non-empty (H, W, L) array, got shape {data.shape}")
        if data.dtype == bool or not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
            raise ValueError(f"cubes[{i}] ({name!r}): expected real numeric data, got dtype {data.dtype}")
        data = np.asarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise ValueError(f"cubes[{i}] ({name!r}): expected finite values, got "
                             f"{int((~np.isfinite(data)).sum())} NaN/Inf entries")
        L = data.shape[2]
        if wl is not None:
            wl = _wavelength_vector(f"cubes[{i}] ({name!r}) wavelengths", wl, L)
            if wavelengths is not None:
                given = _wavelength_vector("wavelengths", wavelengths, L)
                if not np.allclose(given, wl, rtol=1e-6, atol=1e-6):
                    raise ValueError(f"wavelengths: cube {name!r} carries band centres that differ from the "
                                     "ones given; pass wavelengths=None to use the cube's")
        elif wavelengths is not None:
            wl = _wavelength_vector("wavelengths", wavelengths, L)
        return name, data, wl

    @staticmethod
    def _trim(name, data, s):
        H, W = data.shape[:2]
        H2, W2 = H - H % s, W - W % s
        if H2 == 0 or W2 == 0:
            raise ValueError(f"cube {name!r}: expected sides of at least scale={s} pixels, got {H}×{W}")
        if (H2, W2) != (H, W):
            # stacklevel 4 (_trim < _prepare < __init__): the warning names the code that built the dataset
            warnings.warn(f"cube {name!r}: {H}×{W} trimmed to {H2}×{W2} (multiples of scale={s}; the "
                          "last rows/columns are dropped)", stacklevel=4)
            data = data[:H2, :W2]
        return data

    @staticmethod
    def _starts(n, tile):
        if tile is None or tile >= n:
            return [(0, n)]
        starts = list(range(0, n - tile + 1, tile))
        if starts[-1] + tile < n:
            starts.append(n - tile)
        return [(y, tile) for y in starts]

    # ------------------------------------------------------------------ the Dataset protocol

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/augmentations/noise of epoch ``epoch`` (call before iterating)."""
        self.epoch = _int("epoch", epoch, minimum=0)

    def __len__(self) -> int:
        return self.crops_per_epoch if self.mode == "train" else len(self._tiles)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._cubes]

    def cube_info(self, k: int) -> dict:
        """Name, (H, W, L), (vmin, vmax) and wavelengths of cube ``k`` (after trimming)."""
        c = self._cubes[k]
        return {"name": c.name, "shape": c.hr.shape, "vmin": c.vmin, "vmax": c.vmax,
                "wavelengths": None if c.wavelengths is None else c.wavelengths.copy()}

    def _rng(self, index: int) -> np.random.Generator:
        # (seed, stream, epoch, index): training and evaluation draws never share a stream
        if self.mode == "train":
            key = [self.seed, 0, self.epoch, index]
        else:
            key = [self.seed, 1, 0, index]
        return np.random.default_rng(np.random.SeedSequence(key))

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index = int(index)
        s = self.scale
        rng = self._rng(index)
        if self.mode == "train":
            k = int(np.searchsorted(self._cum_area, (index + 0.5) / n, side="right"))
            k = min(k, len(self._cubes) - 1)
            c, C = self._cubes[k], self.crop_size
            H, W = c.hr.shape[:2]
            y = s * int(rng.integers(0, (H - C) // s + 1))
            x = s * int(rng.integers(0, (W - C) // s + 1))
            hr = c.hr[y:y + C, x:x + C]
            msi = c.msi[y:y + C, x:x + C]
            lr = c.lr[y // s:(y + C) // s, x // s:(x + C) // s]
            if self.augment:
                hflip, vflip, rot = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(0, 4))
                hr, msi, lr = (self._augment(a, hflip, vflip, rot) for a in (hr, msi, lr))
            name = c.name
        else:
            k, y, x, th, tw = self._tiles[index]
            c = self._cubes[k]
            hr = c.hr[y:y + th, x:x + tw]
            msi = c.msi[y:y + th, x:x + tw]
            lr = c.lr[y // s:(y + th) // s, x // s:(x + tw) // s]
            whole = (th, tw) == c.hr.shape[:2]
            name = c.name if whole else f"{c.name}@{y},{x}"
        if self.snr_lr is not None:
            lr = add_noise(np.ascontiguousarray(lr), self.snr_lr, rng)
        if self.snr_msi is not None:
            msi = add_noise(np.ascontiguousarray(msi), self.snr_msi, rng)
        return {"lr_hsi": self._tensor(lr), "hr_msi": self._tensor(msi), "hr_hsi": self._tensor(hr),
                "name": name, "vmin": c.vmin, "vmax": c.vmax}

    @staticmethod
    def _augment(a: np.ndarray, hflip: bool, vflip: bool, rot: int) -> np.ndarray:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if rot:
            a = np.rot90(a, rot, axes=(0, 1))
        return a

    @staticmethod
    def _tensor(a: np.ndarray) -> torch.Tensor:
        """(H, W, C) [0, 1] -> (C, H, W) float32 [−1, 1]."""
        out = np.ascontiguousarray(np.transpose(a, (2, 0, 1)), dtype=np.float32)
        return torch.from_numpy(out * 2 - 1)
