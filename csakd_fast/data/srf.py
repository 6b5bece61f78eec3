"""Real sensor spectral response functions (SRFs), resampled onto a cube's wavelength grid.

An MSI band b measures x_b = ∫ r_b(λ) x(λ) dλ / ∫ r_b(λ) dλ of the spectrum x(λ); on a cube whose
L bands sample x at the centres λ_1 < … < λ_L this becomes a row of an (M, L) matrix S, and the
HR-MSI of an HR-HSI cube (H, W, L) is ``cube @ S.T`` (Wald's protocol).

How the integral is discretised: the cube's bands are treated as point samples of the spectrum at
their centres, x(λ) is taken as the piecewise-linear interpolant of those samples (hat functions
φ_l), and each hat is integrated exactly against the sensor's tabulated response (linear
between the table's nodes, negative measurement noise set to 0; the product is quadratic between
the merged breakpoints of both grids, where Simpson's rule is exact):

    S[b, l] = ∫ r_b(λ) φ_l(λ) dλ / Σ_l' ∫ r_b(λ) φ_l'(λ) dλ,   so every row sums to 1.

This is exact for spectra linear between band centres (for x(λ) = α + βλ, S x = α + β·c_b with c_b
the band's response-weighted centroid), and unlike point-sampling r_b at the band centres it does
not lose a narrow band that falls between two cube bands.

Coverage: a band's response is taken over its support, the interval from the first to the last
tabulated wavelength where r_b ≥ ``threshold`` × peak (1 % by default: the tails beyond it hold
0.02–0.25 % of the band integral for the satellite bands, ≤ 0.7 % for the camera; they are dropped
on every grid alike, so S does not depend on how far the cube extends). A band whose support is
not inside [λ_1, λ_L], or that holds no cube band centre (it falls into a gap such as a dropped
water-absorption window), is refused with a ValueError naming the sensor and the band: bands are
never truncated to the cube's range.

Tables (read at run time from the packages that ship them; nothing is copied into csakd_fast):

=============== ============================================== ===============================
sensor           source                                          package (licence)
=============== ============================================== ===============================
``sentinel2``    Sentinel-2A MSI B2, B3, B4, B8: ESA S2-SRF       pyrsr (Apache-2.0),
                 COPE-GSEG-EOPG-TN-15-0007 v3.0 (2017), 1 nm      ``RSR_reader("Sentinel-2A", "MSI")``
``sentinel2b``   Sentinel-2B MSI B2, B3, B4, B8, same document    pyrsr (Apache-2.0)
``landsat8``     Landsat-8 OLI B2–B7: NASA/Ball band-average      pyrsr (Apache-2.0),
                 RSR v1.2 (2014; Barsi et al. 2014), 1 nm         ``RSR_reader("Landsat-8", "OLI_TIRS")``
``landsat9``     Landsat-9 OLI-2 B2–B7 (NASA/Ball)                pyrsr (Apache-2.0)
``nikon_d5100``  Nikon D5100 DSLR R, G, B camera sensitivities    colour-science (BSD-3-Clause),
                 measured at NPL (Darrodi et al. 2015, JOSA A     ``MSDS_CAMERA_SENSITIVITIES
                 32(3):381), 380–780 nm, 5 nm                     ["Nikon 5100 (NPL)"]``
=============== ============================================== ===============================

Sentinel-2's "B8" is the broad 10 m NIR band (775–906 nm at 1 % of peak), not B8A.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["SENSORS", "band_names", "srf_matrix", "response", "band_support", "SOURCES"]

# sensor -> (band names, provenance); the readers below map each to its package's table.
_SENSORS = {
    "sentinel2": (("B2", "B3", "B4", "B8"),
                  "Sentinel-2A MSI, ESA S2-SRF v3.0 (COPE-GSEG-EOPG-TN-15-0007), via pyrsr"),
    "sentinel2b": (("B2", "B3", "B4", "B8"),
                   "Sentinel-2B MSI, ESA S2-SRF v3.0 (COPE-GSEG-EOPG-TN-15-0007), via pyrsr"),
    "landsat8": (("B2", "B3", "B4", "B5", "B6", "B7"),
                 "Landsat-8 OLI band-average RSR, NASA/Ball BA RSR v1.2 (Barsi et al. 2014), via pyrsr"),
    "landsat9": (("B2", "B3", "B4", "B5", "B6", "B7"),
                 "Landsat-9 OLI-2 band-average RSR, NASA/Ball, via pyrsr"),
    "nikon_d5100": (("R", "G", "B"),
                    "Nikon D5100 camera sensitivities measured at NPL (Darrodi et al. 2015), "
                    "via colour-science MSDS_CAMERA_SENSITIVITIES['Nikon 5100 (NPL)']"),
}
SENSORS: tuple[str, ...] = tuple(_SENSORS)
SOURCES: dict[str, str] = {k: v[1] for k, v in _SENSORS.items()}

_PYRSR = {"sentinel2": ("Sentinel-2A", "MSI"), "sentinel2b": ("Sentinel-2B", "MSI"),
          "landsat8": ("Landsat-8", "OLI_TIRS"), "landsat9": ("Landsat-9", "OLI_TIRS")}


def _check_sensor(sensor) -> str:
    if not isinstance(sensor, str) or sensor not in _SENSORS:
        raise ValueError(f"sensor: expected one of {', '.join(repr(s) for s in SENSORS)}, "
                         f"got {sensor!r}")
    return sensor


def band_names(sensor: str) -> list[str]:
    """Band names of ``sensor`` in the order of the rows of :func:`srf_matrix`."""
    return list(_SENSORS[_check_sensor(sensor)][0])


def _missing(package: str, err: Exception) -> ImportError:
    return ImportError(f"csakd_fast.data.srf needs the package {package!r} for its response "
                       f"tables: pip install {package} ({err})")


@functools.lru_cache(maxsize=None)
def _tables(sensor: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The package's raw tables: per band (wavelengths nm (n,), response (n,)), read-only."""
    names = _SENSORS[sensor][0]
    out = []
    if sensor in _PYRSR:
        try:
            from pyrsr.rsr import RSR_reader
        except ImportError as e:  # pragma: no cover - pyrsr is an install requirement
            raise _missing("pyrsr", e) from e
        sat, inst = _PYRSR[sensor]
        raw = RSR_reader(sat, inst, LayerBandsAssignment=[n[1:] for n in names])
        for n in names:
            a = np.asarray(raw[n[1:]], dtype=np.float64)
            wl = a[:, 0] * (1000.0 if a[:, 0].max() < 100 else 1.0)  # the OLI tables are in µm
            out.append((wl, a[:, 1]))
    else:
        printoptions = np.get_printoptions()  # importing colour sets numpy's legacy printing
        try:
            from colour.characterisation import MSDS_CAMERA_SENSITIVITIES
        except ImportError as e:  # pragma: no cover - colour-science is an install requirement
            raise _missing("colour-science", e) from e
        finally:
            np.set_printoptions(**printoptions)
        m = MSDS_CAMERA_SENSITIVITIES["Nikon 5100 (NPL)"]
        wl = np.asarray(m.wavelengths, dtype=np.float64)
        vals = np.asarray(m.values, dtype=np.float64)
        order = [list(m.labels).index(c) for c in ("red", "green", "blue")]
        out = [(wl.copy(), vals[:, i].copy()) for i in order]
    for wl, r in out:
        wl.flags.writeable = False
        r.flags.writeable = False
    return tuple(out)


def response(sensor: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The tabulated responses as shipped: band -> (wavelengths nm (n,), relative response (n,)).

    Copies of the package's table (float64, unnormalised, negative measurement noise kept)."""
    tabs = _tables(_check_sensor(sensor))
    return {n: (wl.copy(), r.copy()) for n, (wl, r) in zip(band_names(sensor), tabs)}


def _support(wl: np.ndarray, r: np.ndarray, threshold: float) -> tuple[float, float]:
    r = np.clip(r, 0.0, None)
    above = np.flatnonzero(r >= threshold * r.max())
    return float(wl[above[0]]), float(wl[above[-1]])


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a number in (0, 1), got {threshold!r}")
    return float(threshold)


def band_support(sensor: str, threshold: float = 0.01) -> dict[str, tuple[float, float]]:
    """Per band, the (first, last) tabulated wavelength in nm where the response is ≥
    ``threshold`` × its peak: the interval a cube must cover."""
    threshold = _check_threshold(threshold)
    return {n: _support(wl, r, threshold) for n, (wl, r) in
            zip(band_names(sensor), _tables(_check_sensor(sensor)))}


def _check_wavelengths(wavelengths_nm) -> np.ndarray:
    try:
        wl = np.asarray(wavelengths_nm, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"wavelengths_nm: expected a 1-D array of band centres in nm, got "
                         f"{type(wavelengths_nm).__name__} ({e})") from None
    if wl.ndim != 1 or wl.size < 2:
        raise ValueError(f"wavelengths_nm: expected a 1-D array of at least 2 band centres, "
                         f"got shape {wl.shape}")
    if not np.isfinite(wl).all():
        raise ValueError("wavelengths_nm: expected finite values, got NaN/Inf")
    if not (np.diff(wl) > 0).all():
        i = int(np.flatnonzero(np.diff(wl) <= 0)[0])
        raise ValueError(f"wavelengths_nm: expected strictly increasing band centres, got "
                         f"{wl[i]} then {wl[i + 1]} at index {i}")
    return wl


def srf_matrix(sensor: str, wavelengths_nm, *, threshold: float = 0.01) -> np.ndarray:
    """Spectral response matrix S (M, L) float64 of ``sensor`` on the band centres
    ``wavelengths_nm`` (L,) in nm; rows sum to 1, HR-MSI = cube (H, W, L) @ S.T.

    See the module docstring for the integration (hat functions on the cube's band centres) and
    the coverage rule (support at ``threshold`` × peak). Raises ValueError naming the sensor band
    when the cube does not cover a band's support."""
    sensor = _check_sensor(sensor)
    threshold = _check_threshold(threshold)
    wl = _check_wavelengths(wavelengths_nm)
    unit_hint = " (these look like micrometres: pass nanometres)" if wl[-1] < 100 else ""
    S = np.zeros((len(_SENSORS[sensor][0]), wl.size), dtype=np.float64)
    for b, (name, (tw, tr)) in enumerate(zip(band_names(sensor), _tables(sensor))):
        lo, hi = _support(tw, tr, threshold)
        if lo < wl[0] or hi > wl[-1]:
            raise ValueError(
                f"wavelengths_nm: {sensor} band {name} responds over {lo:g}–{hi:g} nm (≥ "
                f"{threshold:g} of its peak) but the cube covers {wl[0]:g}–{wl[-1]:g} nm"
                f"{unit_hint}; bands outside the cube's range are refused, not truncated")
        inside = (wl >= lo) & (wl <= hi)
        if not inside.any():
            j = int(np.searchsorted(wl, lo))
            raise ValueError(
                f"wavelengths_nm: {sensor} band {name} responds over {lo:g}–{hi:g} nm, which "
                f"falls between the cube's bands at {wl[j - 1]:g} and {wl[j]:g} nm (no cube band "
                f"inside it); refused")
        # r (the table, linear between its nodes, negatives set to 0) and the hats are both linear
        # between consecutive breakpoints of the two grids: Simpson's rule there is exact
        t = np.unique(np.concatenate([[lo, hi], tw[(tw > lo) & (tw < hi)], wl[(wl > lo) & (wl < hi)]]))
        a, z = t[:-1], t[1:]
        m = 0.5 * (a + z)
        j = np.clip(np.searchsorted(wl, m, side="right") - 1, 0, wl.size - 2)
        left, width = wl[j], wl[j + 1] - wl[j]
        tr_pos = np.clip(tr, 0.0, None)
        ra, rm, rz = (np.interp(x, tw, tr_pos) for x in (a, m, z))
        ua, um, uz = ((x - left) / width for x in (a, m, z))
        h6 = (z - a) / 6.0
        to_right = h6 * (ra * ua + 4.0 * rm * um + rz * uz)          # ∫ r·u over the segment
        to_left = h6 * (ra + 4.0 * rm + rz) - to_right               # ∫ r·(1 − u)
        row = np.bincount(j, to_left, minlength=wl.size) + np.bincount(j + 1, to_right, minlength=wl.size)
        S[b] = row / row.sum()
    return S
