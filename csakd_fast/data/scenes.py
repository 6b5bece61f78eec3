"""Embedded reference scenes: AVIRIS-like HR-HSI cubes built from real measurements.

The default dataset of csakd_fast, for users who have no hyperspectral data yet: 172 bands over
400–2450 nm (the paper's L = 172 AVIRIS setting), spatial structure of a real Sentinel-2 scene,
spectra from a real spectral library, fixed train/val/test regions. Built deterministically on the
first call (≈15 s on the shared 2-core dev machine) and cached.

Sources (read at build time from the pip packages that ship them):

- Spectra: the earthlib global spectral library (earthlib ≥ 1.1, MIT licence; C. Anderson):
  7,261 spectra, 180 bands, 400–2450 nm at 10 nm with the 1360–1450 and 1800–1950 nm water
  windows already removed. 5,261 are measured: soils (the ICRAF-ISRIC soil spectral library, plus
  field sand/gravel/dirt), urban materials (roofs, roads, paint, metal … from the Santa Barbara
  urban reflectance library), non-photosynthetic vegetation (bark, litter, wood) and char (Joint
  Fire Science Program). Its 2,000 green-vegetation spectra are *simulated* (PROSAIL canopy
  reflectance; the library holds no measured green vegetation). We use every measured class, and
  the simulated canopies only for green vegetation, which the real scene needs (≈ 40 % of it is
  forest/crop) and for which no measured spectrum exists in the library.
- Spatial structure: the real Sentinel-2 10 m scene shipped in spyndex (spyndex ≥ 0.12, MIT
  licence; D. Montero): B2, B3, B4, B8 surface reflectance × 10⁴, 300 × 300 pixels, a mosaic of
  forest, pasture and bare fields. Contains modified Copernicus Sentinel data.
- The Sentinel-2A spectral responses of :mod:`csakd_fast.data.srf` (ESA, via pyrsr, Apache-2.0).

Recipe (``RECIPE_VERSION`` 1; every constant is a module constant below):

1. Wavelengths: earthlib's 180 centres minus the two bands on each side of each water window
   (1340, 1350, 1460, 1470, 1780, 1790, 1960, 1970 nm), which in airborne data are the ones left
   dominated by residual water vapour, as AVIRIS users drop them: L = 172 (400–1330, 1480–1770,
   1980–2450 nm). S = the (4, 172) Sentinel-2A B2/B3/B4/B8 SRF matrix on this grid.
2. Endmembers: per class (green vegetation 4, soil 4, NPV 2, built 4, char 1 clusters), k-means
   (scipy ``kmeans2``, k-means++, fixed seed) of the class's spectra (7,260 used: 2,000
   vegetation, 4,248 soil, 104 NPV, 887 built, 21 char; one built spectrum > 1 is dropped); the
   cluster means are the endmembers e_j, plus a zero "shade" endmember (J = 16). Each class's
   spread: the first 5 principal components v_k of its spectra, standard deviations σ_k.
3. Abundances: for each real Sentinel-2 pixel y (4,), a_p = argmin_{a ≥ 0} ‖S E a − y‖² +
   (1ᵀa − 1)² + 10⁻³‖a‖² (scipy ``nnls`` on the stacked system): non-negative, summing to ≈ 1,
   strictly convex so a_p varies continuously with y and keeps the scene's spatial structure.
4. Calibration: x0_p = (E a_p) ⊙ (1 + G c_p), where G (172, 4) is the piecewise-linear hat basis
   on the four band centroids (constant beyond the first and last) and c_p (4,) solves
   S[(E a_p) ⊙ (1 + G c_p)] = y_p: a smooth per-pixel gain (median |c| ≈ 0.02, 99th
   percentile ≈ 0.3) that makes the cube's Sentinel-2A image equal the real scene (to float32
   rounding) while keeping every absorption feature of the mixture.
5. Variability the MSI cannot resolve: δ_p = Σ_j a_pj Σ_k z_jk(p) σ_k v'_jk (k over the
   components of endmember j's class), with z_jk independent stationary Gaussian random fields
   (white noise filtered by a Gaussian of σ = 8 HR pixels, unit variance; every scene its own
   seed) and v'_jk = v_k − B_j (S B_j)⁻¹ S v_k, B_j = e_j ⊙ G: each component with its
   Sentinel-2 signature removed by a smooth gain on the endmember, so S δ_p = 0 exactly. The
   amplitude is the library's own within-class spread (σ_k, no tuning factor); the fields are
   correlated over 2σ = 16 HR pixels (4 LR pixels at ×4): the LR-HSI sees them, the HR-MSI cannot.
6. Cube = clip(x0 + δ, 0, 1) as float32 reflectance (H, W, 172), channel-last (≈ 0.2 % of the
   values, dark vegetation at the SWIR end, are clipped at 0; none inside the Sentinel-2 bands).

Regions of the 300 × 300 scene (rows, columns; half-open; ≥ 16 px guard between splits, so no
crop of a training scene touches the validation or test region):

=========================== ================ ===========
scene                        rows × cols      HR pixels
=========================== ================ ===========
``test``                     [0,128)×[0,128)   128 × 128
``val``                      [236,300)×[0,128) 64 × 128
``train_east_r{0,1}``        [0,288)×[156,300) 288 × 144
``train_west_r{0,1}``        [144,208)×[0,128) 64 × 128
=========================== ================ ===========

Training regions come in two realisations (r0, r1) of the random fields: same spatial structure,
independent spectral variability: 4 scenes, 99,328 HR pixels. Land cover (NDVI > 0.6 / 0.3–0.6 /
< 0.3): test 42/14/44 %, val 32/38/30 %, train_east 45/23/33 %, train_west 11/39/50 %, the whole
scene 38/24/38 %.

Cache: ``<cache>/reference_scenes/<key>/{train,val,test}.npz`` + ``manifest.json`` (provenance,
SHA-256 of every cube), written atomically; ``<cache>`` = the ``cache_dir`` argument, else
``$CSAKD_CACHE``, else ``~/.cache/csakd_fast``; ``<key>`` hashes the recipe version and the bytes
of the source data, so a changed library or scene triggers a rebuild.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _checks, _io
from .srf import srf_matrix

__all__ = ["Scene", "SPLITS", "RECIPE_VERSION", "reference_wavelengths", "load_reference_scenes",
           "build_reference_scenes", "default_cache_dir", "describe"]

RECIPE_VERSION = 1  # bump when the recipe's code changes (its constants are in the cache key)
SPLITS = ("train", "val", "test")
_SEED = 20240531
_MSI_SENSOR = "sentinel2"

# earthlib's band centres (nm): 400–1350, 1460–1790, 1960–2450 at 10 nm (180 bands)
_LIBRARY_GRID = np.concatenate([np.arange(400, 1351, 10), np.arange(1460, 1791, 10),
                                np.arange(1960, 2451, 10)]).astype(np.float64)
_DROPPED_NM = (1340.0, 1350.0, 1460.0, 1470.0, 1780.0, 1790.0, 1960.0, 1970.0)
_CLUSTERS = {"vegetation": 4, "soil": 4, "npv": 2, "built": 4, "char": 1}
_N_PC = 5
_RIDGE = 1e-3
_SUM_WEIGHT = 1.0
_FIELD_SIGMA = 8.0
_SCENE_SHAPE = (300, 300)
# split -> [(name, (row0, row1, col0, col1), realisations)]
_LAYOUT = {
    "test": [("test", (0, 128, 0, 128), 1)],
    "val": [("val", (236, 300, 0, 128), 1)],
    "train": [("train_east", (0, 288, 156, 300), 2), ("train_west", (144, 208, 0, 128), 2)],
}


@dataclass(eq=False)
class Scene:
    """One reference scene: ``cube`` (H, W, L) float32 reflectance, channel-last; ``wavelengths``
    (L,) band centres in nm; ``region`` (row0, row1, col0, col1) of the source Sentinel-2 scene."""

    name: str
    cube: np.ndarray
    wavelengths: np.ndarray
    region: tuple = ()

    def __repr__(self) -> str:
        return (f"Scene(name={self.name!r}, cube={self.cube.shape} {self.cube.dtype}, "
                f"wavelengths={self.wavelengths[0]:g}–{self.wavelengths[-1]:g} nm)")


def reference_wavelengths() -> np.ndarray:
    """Band centres (172,) in nm of the reference scenes: 400–1330, 1480–1770, 1980–2450 at 10 nm."""
    return _LIBRARY_GRID[~np.isin(_LIBRARY_GRID, _DROPPED_NM)].copy()


def default_cache_dir() -> Path:
    """``$CSAKD_CACHE`` when set, else ``~/.cache/csakd_fast``."""
    env = os.environ.get("CSAKD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "csakd_fast"


# --- sources -------------------------------------------------------------------------------

def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside ``package``, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the reference scenes need the package {package!r}: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected in the installed {package!r} package; "
                                f"reinstall it (pip install --force-reinstall {package})")
    return path


def _sources() -> dict[str, Path]:
    return {"library": _package_file("earthlib", "data", "spectra.sli"),
            "library_header": _package_file("earthlib", "data", "spectra.sli.hdr"),
            "library_metadata": _package_file("earthlib", "data", "spectra.csv"),
            "sentinel2_scene": _package_file("spyndex", "data", "S2_10m.json")}


def _class_of(row: dict) -> str:
    if row["LEVEL_2"] == "vegetation":
        return "vegetation"
    if row["LEVEL_1"] == "impervious":
        return "built"
    return {"bare": "soil", "npv": "npv", "burned": "char"}.get(row["LEVEL_2"], "other")


def _library(src: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """earthlib's spectra on the reference grid (n, 172) float64 and their classes (n,)."""
    import csv

    from spectral.io import envi

    lib = envi.open(str(src["library_header"]), str(src["library"]))
    spectra = np.asarray(lib.spectra, dtype=np.float64)
    grid = np.round(np.asarray(lib.bands.centers, dtype=np.float64) * 1000.0, 3)  # µm -> nm
    if grid.shape != _LIBRARY_GRID.shape or not np.allclose(grid, _LIBRARY_GRID):
        raise ValueError(f"{src['library_header']}: expected earthlib's 180 band centres 400–2450 nm, "
                         f"got {grid.size} from {grid[0]:g} to {grid[-1]:g} nm")
    with open(src["library_metadata"], newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(spectra):
        raise ValueError(f"{src['library_metadata']}: expected {len(spectra)} rows (one per spectrum "
                         f"of {src['library'].name}), got {len(rows)}")
    classes = np.array([_class_of(r) for r in rows])
    measured = np.array([r["LEVEL_4"] == "measured" for r in rows])
    # measured spectra of every class; simulated ones only for green vegetation (none measured)
    keep = (measured | (classes == "vegetation")) & np.isin(classes, list(_CLUSTERS)) \
        & (spectra.min(1) >= 0) & (spectra.max(1) <= 1) & np.isfinite(spectra).all(1)
    spectra = spectra[:, ~np.isin(_LIBRARY_GRID, _DROPPED_NM)]
    return spectra[keep], classes[keep]


def _sentinel2_scene(src: dict[str, Path]) -> np.ndarray:
    """spyndex's real Sentinel-2 scene as reflectance (300, 300, 4) float64 (B2, B3, B4, B8)."""
    with open(src["sentinel2_scene"]) as f:
        a = np.asarray(json.load(f), dtype=np.float64)
    if a.shape != (4,) + _SCENE_SHAPE:
        raise ValueError(f"{src['sentinel2_scene']}: expected a (4, 300, 300) B2/B3/B4/B8 array, "
                         f"got {a.shape}")
    return a.transpose(1, 2, 0) / 1e4


# --- recipe --------------------------------------------------------------------------------

def _hat_basis(wl: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(L, 4) piecewise-linear hats on the band centroids, constant beyond the outer ones."""
    eye = np.eye(len(centres))
    return np.stack([np.interp(wl, centres, eye[b]) for b in range(len(centres))], 1)


def _endmembers(spectra, classes, S, G):
    """Cluster means E (L, J) (last column: shade) and the MSI-invisible variability basis
    P (K, L) with its owner endmember per row (K,)."""
    from scipy.cluster.vq import kmeans2

    means, basis, owner = [], [], []
    for c, k in _CLUSTERS.items():
        X = spectra[classes == c]
        if k > 1:
            _, labels = kmeans2(X, k, minit="++", seed=np.random.default_rng(_SEED))
        else:
            labels = np.zeros(len(X), dtype=int)
        # the class's own spread: leading principal components of its (L, L) covariance
        n = min(_N_PC, len(X) - 1)
        var, vec = np.linalg.eigh(np.cov(X, rowvar=False))
        sigma = np.sqrt(np.clip(var[::-1][:n], 0.0, None))
        vt = vec[:, ::-1][:, :n].T
        vt = vt * np.sign(vt[np.arange(n), np.abs(vt).argmax(1)])[:, None]  # fix the signs
        for i in range(k):
            mu = X[labels == i].mean(0)
            B = mu[:, None] * G
            visible = B @ np.linalg.solve(S @ B, S @ vt.T)  # (L, n): the part Sentinel-2 sees
            basis.append((vt - visible.T) * sigma[:, None])
            owner += [len(means)] * n
            means.append(mu)
    E = np.stack(means + [np.zeros(S.shape[1])], 1)
    return E, np.concatenate(basis, 0), np.asarray(owner)


def _abundances(Y: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(N, J) argmin_{a ≥ 0} ‖A a − y‖² + w²(1ᵀa − 1)² + λ‖a‖² per row y of Y (N, M).

    The objective is ½aᵀQa − bᵀa + const with Q = AᵀA + w²11ᵀ + λI (positive definite: one
    minimiser) and b = Aᵀy + w²1. Its minimiser on a free set F is a_F = Q_FF⁻¹ b_F, a_¬F = 0,
    exact when the KKT conditions hold (a_F ≥ 0, (Qa − b)_¬F ≥ 0). Pixels share few free sets, so
    scipy's ``nnls`` solves a strided sample, the free sets it finds are checked on all pixels at
    once, and ``nnls`` solves the few pixels no set fits: the same minimiser as ``nnls`` on every
    pixel (to rounding), ≈ 30× faster."""
    from scipy.optimize import nnls

    M, J = A.shape
    As = np.vstack([A, _SUM_WEIGHT * np.ones((1, J)), np.sqrt(_RIDGE) * np.eye(J)])
    Q = As.T @ As
    b = Y @ A + _SUM_WEIGHT ** 2
    rhs = np.zeros(As.shape[0])
    rhs[M] = _SUM_WEIGHT

    def solve(i):
        rhs[:M] = Y[i]
        return nnls(As, rhs)[0]

    counts: dict[tuple, int] = {}
    for i in range(0, len(Y), 64):
        key = tuple(solve(i) > 0)
        counts[key] = counts.get(key, 0) + 1
    out = np.zeros((len(Y), J))
    todo = np.arange(len(Y))
    tol = 1e-10 * (1.0 + np.abs(b).max())
    for key in sorted(counts, key=lambda k: (-counts[k], k)):
        if not todo.size:
            break
        F = np.asarray(key)
        aF = np.linalg.solve(Q[np.ix_(F, F)], b[todo][:, F].T).T
        grad = aF @ Q[F][:, ~F] - b[todo][:, ~F]
        ok = (aF >= 0).all(1) & (grad >= -tol).all(1)
        out[np.ix_(todo[ok], np.flatnonzero(F))] = aF[ok]
        todo = todo[~ok]
    for i in todo:
        out[i] = solve(i)
    return out


def _calibrate(x: np.ndarray, Y: np.ndarray, S: np.ndarray, G: np.ndarray) -> np.ndarray:
    """x ⊙ (1 + G c) with c (N, 4) solving S[x ⊙ (1 + G c)] = y per pixel."""
    M, K = S.shape[0], G.shape[1]
    W = (S[:, :, None] * G[None]).transpose(1, 0, 2).reshape(-1, M * K)  # (L, M·K)
    Mx = (x @ W).reshape(-1, M, K)  # (N, M, K): S diag(x_n) G
    c = np.linalg.solve(Mx + 1e-12 * np.eye(K), (Y - x @ S.T)[..., None])[..., 0]
    return x * (1.0 + c @ G.T)


def _random_fields(rng: np.random.Generator, shape: tuple, n: int) -> np.ndarray:
    """(H, W, n) independent unit-variance stationary Gaussian random fields with a Gaussian
    correlation of σ = ``_FIELD_SIGMA`` px: white noise on a canvas padded by 4σ, filtered in
    the Fourier domain (periodic, so the margin keeps the crop free of wrap-around)."""
    m = int(np.ceil(4 * _FIELD_SIGMA))
    H, W = shape
    Hp, Wp = H + 2 * m, W + 2 * m
    fy = np.fft.fftfreq(Hp)[:, None]
    fx = np.fft.rfftfreq(Wp)[None, :]
    transfer = np.exp(-2.0 * (np.pi * _FIELD_SIGMA) ** 2 * (fx ** 2 + fy ** 2))
    # output variance of unit white noise = mean of |transfer|² over the full spectrum
    full = np.exp(-2.0 * (np.pi * _FIELD_SIGMA) ** 2
                  * (np.fft.fftfreq(Wp)[None, :] ** 2 + fy ** 2))
    norm = np.sqrt((full ** 2).mean())
    noise = rng.standard_normal((n, Hp, Wp))
    z = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=(Hp, Wp)) / norm
    return np.ascontiguousarray(z[:, m:m + H, m:m + W].transpose(1, 2, 0))


def _scene_rng(name: str) -> np.random.Generator:
    return np.random.default_rng([_SEED, zlib.crc32(name.encode())])


def build_reference_scenes(splits=SPLITS) -> dict[str, list[Scene]]:
    """Build the scenes of ``splits`` in memory (no cache): split -> [Scene]. Deterministic."""
    splits = _check_splits(splits)
    src = _sources()
    wl = reference_wavelengths()
    S = srf_matrix(_MSI_SENSOR, wl)
    G = _hat_basis(wl, S @ wl)
    spectra, classes = _library(src)
    E, P, owner = _endmembers(spectra, classes, S, G)
    s2 = _sentinel2_scene(src)
    out: dict[str, list[Scene]] = {}
    for split in splits:
        out[split] = []
        for base, (r0, r1, c0, c1), reps in _LAYOUT[split]:
            Y = s2[r0:r1, c0:c1].reshape(-1, 4)
            a = _abundances(Y, S @ E)
            x0 = _calibrate(a @ E.T, Y, S, G)
            weights = a[:, owner]  # (N, K): abundance of the endmember owning each component
            for rep in range(reps):
                name = base if reps == 1 else f"{base}_r{rep}"
                z = _random_fields(_scene_rng(name), (r1 - r0, c1 - c0), len(P))
                x = x0 + (weights * z.reshape(-1, len(P))) @ P
                cube = np.clip(x, 0.0, 1.0).astype(np.float32).reshape(r1 - r0, c1 - c0, -1)
                out[split].append(Scene(name, cube, wl.copy(), (r0, r1, c0, c1)))
    return out


# --- cache ---------------------------------------------------------------------------------

def _check_splits(splits) -> tuple[str, ...]:
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"split: expected one of 'train', 'val', 'test', got {s!r}")
    return splits


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cube_sha256(cube: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cube, dtype="<f4").tobytes()).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("earthlib", "spyndex", "pyrsr", "numpy", "scipy", "spectral"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:  # pragma: no cover
            out[p] = "not installed"
    return out


def _source_hashes(src: dict[str, Path]) -> dict[str, str]:
    return {k: _sha256(p) for k, p in src.items()}


def _cache_key(hashes: dict[str, str]) -> str:
    constants = [_SEED, _MSI_SENSOR, _DROPPED_NM, _CLUSTERS, _N_PC, _RIDGE, _SUM_WEIGHT,
                 _FIELD_SIGMA, _LAYOUT]
    blob = json.dumps({"recipe": RECIPE_VERSION, "sources": hashes, "constants": repr(constants)},
                      sort_keys=True)
    return f"v{RECIPE_VERSION}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _write(folder: Path, scenes: dict[str, list[Scene]], hashes: dict, seconds: float) -> None:
    manifest = {"recipe_version": RECIPE_VERSION, "build_seconds": round(seconds, 2),
                "sources": {k: {"file": str(p), "sha256": hashes[k]} for k, p in _sources().items()},
                "versions": _versions(), "msi_sensor": _MSI_SENSOR, "scenes": {}}
    for split, items in scenes.items():
        with _io.atomic_path(folder / f"{split}.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, wavelengths=reference_wavelengths(),
                         **{f"cube:{s.name}": s.cube for s in items},
                         **{f"region:{s.name}": np.asarray(s.region) for s in items})
        manifest["scenes"][split] = [{"name": s.name, "shape": list(s.cube.shape),
                                      "region": list(s.region), "sha256": _cube_sha256(s.cube)}
                                     for s in items]
    # the manifest goes last: its presence marks a complete build
    _io.atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def _read(path: Path) -> list[Scene]:
    try:
        with np.load(path) as z:
            wl = z["wavelengths"]
            return [Scene(k[5:], z[k], wl.copy(), tuple(int(v) for v in z["region:" + k[5:]]))
                    for k in z.files if k.startswith("cube:")]
    except Exception as e:
        raise ValueError(f"{path}: unreadable reference-scene cache ({e}); delete the folder "
                         f"{path.parent} to rebuild it") from e


def load_reference_scenes(split: str, cache_dir=None) -> list[Scene]:
    """The reference scenes of ``split`` ('train' (4 scenes), 'val' (1), 'test' (1)).

    Built on the first call (all splits at once, ≈15 s on 2 cores) and cached under
    ``cache_dir`` (default :func:`default_cache_dir`); later calls read the cache (≈0.2 s).
    Returns fresh, writable arrays."""
    _checks.choice("split", split, SPLITS)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    hashes = _source_hashes(_sources())
    folder = root / "reference_scenes" / _cache_key(hashes)
    if not (folder / "manifest.json").is_file():
        t = time.perf_counter()
        scenes = build_reference_scenes(SPLITS)
        _write(folder, scenes, hashes, time.perf_counter() - t)
        return scenes[split]
    return _read(folder / f"{split}.npz")


def describe() -> str:
    """Provenance, licences and the exact recipe of the reference scenes (this module's doc)."""
    return __doc__ or "see the docstring of csakd_fast/data/scenes.py"  # None under python -OO
