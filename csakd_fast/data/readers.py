"""Read and write hyperspectral cubes: MATLAB .mat (v5 and v7.3), .npy/.npz, ENVI, TIFF and folders of
per-band PNGs (the CAVE layout).

Every reader returns ``Cube(data (H, W, L) float32, wavelengths (L,) float64 nm or None, path)``.
The band axis is never guessed from the sizes:

- ``.mat`` / ``.npy`` / ``.npz``: the array is (H, W, L) as MATLAB or numpy shows it (``band_axis=-1``);
  pass ``band_axis`` for another layout. MATLAB v7.3 files are HDF5 whose datasets h5py sees with the
  axes reversed (MATLAB is column-major): they are transposed back to MATLAB's view first.
- TIFF: from the axis labels tifffile reads from the file (``series.axes``): after dropping length-1
  axes, Y and X are the image and the one remaining axis (S samples, C channels, Q/I/Z pages …) is
  the bands; any other layout needs ``band_axis`` (an axis of the stored array).
- ENVI: ``spectral`` reads the header's interleave; PNG folders: one file per band.

Wavelengths (band centres, nm) come from the file when it has them (ENVI ``wavelength`` with its
``wavelength units``; a ``wavelengths``/``wavelength`` variable in .mat/.npz; the ``wavelengths``
entry of the JSON description csakd_fast writes into TIFFs), else from ``wavelengths=``; given in
both places they must agree. ``wavelengths="cave"`` is 400, 410, …, 700 nm (31 bands, CAVE) and is
used only when asked for.

A file that cannot be read or holds something inconsistent (truncated, several candidate arrays and
no ``key``, mixed band sizes, NaN/Inf, a wavelength count that does not match the bands …) raises a
ValueError naming the file and what is wrong.
"""
from __future__ import annotations

import numbers
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path

__all__ = ["Cube", "read_cube", "write_cube", "CAVE_WAVELENGTHS", "ENVI_DATA_SUFFIXES"]

CAVE_WAVELENGTHS = np.arange(400.0, 701.0, 10.0)          # 31 bands, 400–700 nm step 10
ENVI_DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".envi")
_TIFF_SUFFIXES = (".tif", ".tiff")
_WAVELENGTH_KEYS = ("wavelengths", "wavelength")


@dataclass(frozen=True, eq=False)
class Cube:
    """A hyperspectral cube: ``data`` (H, W, L) float32, ``wavelengths`` (L,) float64 in nm or None,
    ``path`` it was read from (None for in-memory cubes)."""

    data: np.ndarray
    wavelengths: np.ndarray | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return _stem(self.path) if self.path is not None else "cube"


class _FileError(ValueError):
    """A ValueError whose message already names the file."""


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _shape(a) -> str:
    return "(" + ", ".join(str(d) for d in a.shape) + ")"


def _fail(path, what: str):
    raise _FileError(f"{path}: {what}")


# ------------------------------------------------------------------------------------ reading

def read_cube(path, *, key: str | None = None, wavelengths=None, band_axis: int | None = None) -> Cube:
    """Read a cube (H, W, L) float32 from a .mat, .npy, .npz, ENVI (.hdr or its data file), TIFF file
    or a folder of per-band PNGs.

    ``key``: the variable of a .mat/.npz (default: the only 3-D numeric array in it).
    ``wavelengths``: band centres in nm, (L,), or ``"cave"``; required by nothing here, checked
    against the file's own when both exist. ``band_axis``: which axis of the stored array holds the
    bands for .mat/.npy/.npz/TIFF (see the module doc for the defaults)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"path: no such file or folder: {path}")
    if band_axis is not None and (isinstance(band_axis, bool) or not isinstance(band_axis, numbers.Integral)):
        raise ValueError(f"band_axis: expected an int or None, got {band_axis!r}")
    if key is not None and not isinstance(key, str):
        raise ValueError(f"key: expected a variable name (str) or None, got {key!r}")
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            fmt = "PNG folder"
            _no_option(path, fmt, key=key, band_axis=band_axis)
            data, wl_file = _read_png_dir(path)
        elif suffix == ".mat":
            fmt = "MATLAB"
            data, wl_file = _read_mat(path, key, band_axis)
        elif suffix == ".npy":
            fmt = "numpy"
            _no_option(path, fmt, key=key)
            data, wl_file = _to_hwl(path, _load_npy(path), band_axis), None
        elif suffix == ".npz":
            fmt = "numpy"
            data, wl_file = _read_npz(path, key, band_axis)
        elif suffix in _TIFF_SUFFIXES:
            fmt = "TIFF"
            _no_option(path, fmt, key=key)
            data, wl_file = _read_tiff(path, band_axis)
        elif suffix == ".hdr" or suffix in ENVI_DATA_SUFFIXES:
            fmt = "ENVI"
            _no_option(path, fmt, key=key, band_axis=band_axis)
            data, wl_file = _read_envi(path)
        else:
            raise ValueError(f"path: expected a .mat, .npy, .npz, .tif/.tiff, ENVI (.hdr or "
                             f"{'/'.join(ENVI_DATA_SUFFIXES)}) file or a folder of PNGs, got {path}")
    except _FileError:
        raise
    except ValueError as e:
        if str(e).startswith("path:"):
            raise
        raise ValueError(f"{path}: not a readable {fmt} cube ({e})") from e
    except Exception as e:   # the libraries' own errors: truncated/corrupt files, bad headers …
        raise ValueError(f"{path}: not a readable {fmt} cube ({type(e).__name__}: {e})") from e
    data = _check_data(path, data)
    wl = _merge_wavelengths(path, data.shape[2], wl_file, wavelengths)
    return Cube(data, wl, path)


def _no_option(path, fmt, **opts):
    for k, v in opts.items():
        if v is not None:
            raise ValueError(f"{k}: not used for a {fmt} ({path}); expected None, got {v!r}")


def _check_data(path, data) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 3:
        _fail(path, f"expected a 3-D cube (H, W, L), got shape {_shape(data)}")
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        _fail(path, f"expected real numeric data, got dtype {data.dtype}")
    if min(data.shape) == 0:
        _fail(path, f"expected a non-empty cube, got shape {_shape(data)}")
    data = np.ascontiguousarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        _fail(path, f"expected finite values, got {int(bad.sum())} NaN/Inf entries in shape {_shape(data)} "
                    "(mask or fill no-data pixels first)")
    return data


def _wavelength_vector(name, wl, n_bands) -> np.ndarray:
    if isinstance(wl, str):
        if wl.lower() != "cave":
            raise ValueError(f"{name}: expected band centres in nm or 'cave', got {wl!r}")
        wl = CAVE_WAVELENGTHS
    if hasattr(wl, "detach"):
        wl = wl.detach().cpu().numpy()
    try:
        wl = np.array(wl, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got {type(wl).__name__}") from None
    wl = wl.reshape(-1) if wl.ndim == 2 and 1 in wl.shape else wl   # MATLAB row/column vectors
    if wl.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector of band centres, got shape {_shape(wl)}")
    if wl.shape[0] != n_bands:
        raise ValueError(f"{name}: expected {n_bands} band centres (one per band), got {wl.shape[0]}")
    if not np.isfinite(wl).all() or (wl <= 0).any():
        raise ValueError(f"{name}: expected finite, positive band centres in nm, got {wl.tolist()[:8]}…")
    return wl


def _merge_wavelengths(path, n_bands, from_file, given):
    if from_file is not None:
        try:
            from_file = _wavelength_vector("wavelengths", from_file, n_bands)
        except ValueError as e:
            _fail(path, f"inconsistent wavelengths in the file: {e}")
    if given is not None:
        given = _wavelength_vector("wavelengths", given, n_bands)
        if from_file is not None and not np.allclose(given, from_file, rtol=1e-6, atol=1e-6):
            raise ValueError(f"wavelengths: the file {path} has its own band centres "
                             f"({from_file[0]:g}…{from_file[-1]:g} nm) that differ from the ones given "
                             f"({given[0]:g}…{given[-1]:g} nm); pass wavelengths=None to use the file's")
    return from_file if from_file is not None else given


def _to_hwl(path, arr, band_axis) -> np.ndarray:
    """Move the band axis of a stored 3-D array last (default: already last)."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        _fail(path, f"expected a 3-D cube, got shape {_shape(arr)}")
    if band_axis is None:
        return arr
    if not -3 <= band_axis <= 2:
        raise ValueError(f"band_axis: expected an axis of a 3-D array (-3…2), got {band_axis}")
    return np.moveaxis(arr, band_axis, -1)


def _is_numeric(a) -> bool:
    return a.dtype != bool and (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))


def _pick(path, arrays: dict, key):
    """The cube variable: ``key`` or the only 3-D numeric array; and the wavelengths variable."""
    wl = next((arrays[k] for k in arrays if k.lower() in _WAVELENGTH_KEYS), None)
    if key is not None:
        if key not in arrays:
            _fail(path, f"no variable {key!r}; it holds {', '.join(sorted(arrays)) or 'nothing'}")
        return arrays[key], wl
    cands = [k for k, a in arrays.items() if getattr(a, "ndim", 0) == 3 and _is_numeric(a)]
    listing = ", ".join(f"{k} {_shape(a)}" for k, a in arrays.items() if hasattr(a, "shape"))
    if not cands:
        _fail(path, f"no 3-D numeric array in it (variables: {listing or 'none'})")
    if len(cands) > 1:
        _fail(path, f"several 3-D arrays ({', '.join(cands)}): pass key= to choose one")
    return arrays[cands[0]], wl


def _read_mat(path, key, band_axis):
    import h5py

    if h5py.is_hdf5(path):
        return _read_mat73(path, key, band_axis)
    import scipy.io

    try:
        raw = scipy.io.loadmat(path)
    except NotImplementedError as e:   # scipy's answer to v7.3, should h5py not have seen HDF5
        _fail(path, f"a MATLAB v7.3 file that is not valid HDF5 ({e})")
    arrays = {k: v for k, v in raw.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and (_is_numeric(v) or v.dtype == bool)}
    data, wl = _pick(path, arrays, key)
    return _to_hwl(path, data, band_axis), wl


def _read_mat73(path, key, band_axis):
    """MATLAB v7.3 (HDF5): datasets at the top level; h5py reverses MATLAB's axes."""
    import h5py

    with h5py.File(path, "r") as f:
        shapes = {k: f[k] for k in f.keys() if isinstance(f[k], h5py.Dataset) and not k.startswith("#")}
        arrays = {}
        for k, ds in shapes.items():
            if ds.dtype.names is not None:   # complex numbers are a compound (real, imag)
                if key == k or (key is None and ds.ndim == 3):
                    _fail(path, f"variable {k!r} is complex; expected real data")
                continue
            if not (np.issubdtype(ds.dtype, np.integer) or np.issubdtype(ds.dtype, np.floating)):
                continue
            arrays[k] = ds
        data, wl = _pick(path, arrays, key)
        data = np.asarray(data[()]).transpose(*reversed(range(data.ndim)))
        wl = None if wl is None else np.asarray(wl[()]).T
    return _to_hwl(path, data, band_axis), wl


def _load_npy(path):
    return np.load(path, allow_pickle=False)


def _read_npz(path, key, band_axis):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    data, wl = _pick(path, arrays, key)
    return _to_hwl(path, data, band_axis), wl


def _read_tiff(path, band_axis):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            _fail(path, "no image in the TIFF")
        series = tif.series[0]
        arr = series.asarray()
        axes = series.axes
        meta = tif.shaped_metadata[0] if tif.shaped_metadata else None
    wl = meta.get("wavelengths") if isinstance(meta, dict) else None
    if band_axis is not None:
        if arr.ndim != 3:
            _fail(path, f"expected a 3-D image with band_axis={band_axis}, got shape {_shape(arr)} (axes {axes})")
        return _to_hwl(path, arr, band_axis), wl
    if len(axes) != arr.ndim or "Y" not in axes or "X" not in axes:
        _fail(path, f"cannot tell the image axes from the TIFF (axes {axes!r}, shape {_shape(arr)}); "
                    "pass band_axis=")
    keep = [i for i, a in enumerate(axes) if a in "YX" or arr.shape[i] > 1]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    if len(others) != 1:
        what = "no band axis (a single-band image)" if not others else f"several candidate band axes ({axes!r})"
        _fail(path, f"{what} in shape {_shape(arr)}; expected Y, X and one band axis (pass band_axis= "
                    "to say which axis of the stored array holds the bands)")
    arr = arr.transpose(axes.index("Y"), axes.index("X"), others[0])
    return arr, wl


def _envi_header(path: Path) -> tuple[Path, Path | None]:
    if path.suffix.lower() == ".hdr":
        return path, None
    for hdr in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if hdr.exists():
            return hdr, path
    _fail(path, f"no ENVI header beside it (looked for {path.with_suffix('.hdr').name} and {path.name}.hdr)")


def _read_envi(path: Path):
    from spectral.io import envi

    hdr, image = _envi_header(path)
    img = envi.open(str(hdr), None if image is None else str(image))
    expected = img.offset + img.nrows * img.ncols * img.nbands * img.sample_size
    size = os.path.getsize(img.filename)
    if size < expected:
        _fail(path, f"the data file {img.filename} has {size} bytes, the header ({hdr.name}) describes "
                    f"{img.nrows}×{img.ncols}×{img.nbands} samples of {img.sample_size} bytes after an "
                    f"offset of {img.offset} = {expected} bytes (truncated file?)")
    data = np.array(img.open_memmap(interleave="bip"))
    wl = img.bands.centers
    if wl is not None:
        wl = np.asarray(wl, dtype=np.float64)
        unit = (img.bands.band_unit or "").strip().lower()
        if unit in ("micrometers", "micrometer", "microns", "micron", "um", "µm", "μm"):
            wl = wl * 1000.0
        elif unit in ("nanometers", "nanometer", "nm"):
            pass
        elif unit in ("", "unknown"):
            if np.isfinite(wl).all() and wl.max() < 30.0:   # no imaging spectrometer works below 30 nm
                warnings.warn(f"{path}: wavelengths without units, all < 30: read as micrometres "
                              "and converted to nm", stacklevel=3)
                wl = wl * 1000.0
        else:   # e.g. "Index": band numbers, not band centres
            warnings.warn(f"{path}: wavelength units {img.bands.band_unit!r} are not a length "
                          "(Nanometers or Micrometers); the header's wavelengths are ignored", stacklevel=3)
            wl = None
    return data, wl


_PNG_BAND = re.compile(r"^(?P<prefix>.*?)[_-]?(?P<num>\d+)\.png$", re.IGNORECASE)


def _png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _read_png_dir(path: Path):
    """One 2-D PNG per band, named <prefix>_<n>.png with consecutive n (CAVE: <scene>_01 … _31).
    A folder holding only one sub-folder with the PNGs (CAVE's <scene>/<scene>/) is entered."""
    from PIL import Image

    folder, files = path, _png_files(path)
    if not files:
        subs = [d for d in path.iterdir() if d.is_dir()]
        if len(subs) == 1 and _png_files(subs[0]):
            folder, files = subs[0], _png_files(subs[0])
        else:
            _fail(path, "no PNG files in the folder (expected one per band: <scene>_01.png, <scene>_02.png, …)")
    parsed = []
    for f in files:
        m = _PNG_BAND.match(f.name)
        if m is None:
            _fail(f, "PNG name without a band number (expected <scene>_<n>.png)")
        parsed.append((int(m.group("num")), m.group("prefix"), f))
    prefixes = {p for _, p, _ in parsed}
    if len(prefixes) > 1:
        _fail(folder, f"PNGs of several scenes ({', '.join(sorted(prefixes))}); expected one scene per folder")
    parsed.sort()
    nums = [n for n, _, _ in parsed]
    if nums != list(range(nums[0], nums[0] + len(nums))):
        missing = sorted(set(range(nums[0], nums[-1] + 1)) - set(nums))
        _fail(folder, f"band numbers are not consecutive (have {nums[0]}…{nums[-1]}, "
                      f"missing {missing or 'none'}, duplicates {len(nums) != len(set(nums))})")
    bands, ref = [], None
    for _, _, f in parsed:
        try:
            with Image.open(f) as im:
                im.load()
                a = np.asarray(im)
        except Exception as e:
            _fail(f, f"not a readable PNG ({type(e).__name__}: {e})")
        if a.ndim == 3:
            # some CAVE bands are stored as grey RGB(A); a real colour image is not a band
            if a.shape[2] in (3, 4) and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
                a = a[..., 0]
            elif a.shape[2] == 2:   # grey + alpha
                a = a[..., 0]
            else:
                _fail(f, f"a colour image {_shape(a)}; expected one grey band per file")
        if ref is None:
            ref = (a.shape, a.dtype, f)
        elif a.shape != ref[0]:
            _fail(f, f"band of size {_shape(a)} differs from {ref[2].name} {_shape(np.empty(ref[0]))}")
        elif a.dtype != ref[1]:
            _fail(f, f"bit depth {a.dtype} differs from {ref[2].name} ({ref[1]})")
        bands.append(a)
    return np.stack(bands, axis=-1), None


# ------------------------------------------------------------------------------------ writing

def write_cube(path, data, wavelengths=None, *, key: str = "cube") -> Path:
    """Write a cube (H, W, L) as float32, atomically, in the format the suffix names:

    - ``.npy`` (data only: wavelengths cannot be stored and are dropped with a warning),
    - ``.npz`` (``cube`` and ``wavelengths`` arrays), ``.mat`` (MATLAB v5: variable ``key`` and
      ``wavelengths`` as a 1×L row; v5 holds at most 2 GiB per variable),
    - ENVI: ``x.hdr`` or ``x.img`` (also .dat/.raw/…) writes ``x.hdr`` + the data file, BSQ
      interleave, ``wavelength`` in Nanometers,
    - ``.tif``/``.tiff``: one page with L planar samples (axes CYX, GDAL reads L bands) and a JSON
      description with the wavelengths (BigTIFF above 4 GiB).

    Returns the path written (for ENVI the header)."""
    path = Path(path)
    arr = np.asarray(data.detach().cpu().numpy() if hasattr(data, "detach") else data)
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise ValueError(f"data: expected a non-empty cube (H, W, L), got shape {_shape(arr)}")
    if not _is_numeric(arr):
        raise ValueError(f"data: expected real numeric data, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"data: expected finite values, got {int((~np.isfinite(arr)).sum())} NaN/Inf entries")
    wl = None if wavelengths is None else _wavelength_vector("wavelengths", wavelengths, arr.shape[2])
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if wl is not None:
            warnings.warn(f"{path}: a .npy file holds one array; the wavelengths are not written "
                          "(use .npz, .mat, ENVI or TIFF to keep them)", stacklevel=2)
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, arr)
    elif suffix == ".npz":
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, cube=arr, **({} if wl is None else {"wavelengths": wl}))
    elif suffix == ".mat":
        import scipy.io

        if arr.nbytes >= 2 ** 31:
            raise ValueError(f"data: {arr.nbytes} bytes exceed the 2 GiB a MATLAB v5 variable holds; "
                             "write .npy, ENVI or TIFF instead")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", key):
            raise ValueError(f"key: expected a MATLAB variable name, got {key!r}")
        out = {key: arr}
        if wl is not None:
            out["wavelengths"] = wl[None, :]
        with atomic_path(path, suffix=".mat") as tmp:
            scipy.io.savemat(tmp, out)
    elif suffix in _TIFF_SUFFIXES:
        import tifffile

        meta = {"axes": "CYX"}
        if wl is not None:
            meta["wavelengths"] = wl.tolist()
        with atomic_path(path, suffix=suffix) as tmp:
            tifffile.imwrite(tmp, arr.transpose(2, 0, 1), photometric="minisblack",
                             planarconfig="separate", metadata=meta,
                             bigtiff=arr.nbytes > 2 ** 32 - 2 ** 25)
    elif suffix == ".hdr" or suffix in ENVI_DATA_SUFFIXES:
        return _write_envi(path, arr, wl)
    else:
        raise ValueError(f"path: expected a .npy, .npz, .mat, .tif/.tiff or ENVI (.hdr or "
                         f"{'/'.join(ENVI_DATA_SUFFIXES)}) file name, got {path}")
    return path


def _write_envi(path: Path, arr: np.ndarray, wl) -> Path:
    """Both files are written into a private temporary folder beside the target and moved into
    place with os.replace, the data file first: each file appears whole, and the header (which
    makes the pair readable) last."""
    from spectral.io import envi

    if path.suffix.lower() == ".hdr":   # x.hdr -> x.img; x.img.hdr -> x.img
        stem = path.name[:-4]
        hdr, img = path, path.with_name(stem if Path(stem).suffix.lower() in ENVI_DATA_SUFFIXES else stem + ".img")
    else:
        hdr, img = path.with_suffix(".hdr"), path
    hdr.parent.mkdir(parents=True, exist_ok=True)
    meta = {"description": "written by csakd_fast"}
    if wl is not None:
        meta["wavelength"] = [float(v) for v in wl]
        meta["wavelength units"] = "Nanometers"
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{hdr.stem}.", dir=hdr.parent))
    try:
        envi.save_image(str(tmpdir / hdr.name), arr, metadata=meta, force=True,
                        ext=img.name[len(hdr.name) - 4:],   # spectral: data = header name − ".hdr" + ext
                        interleave="bsq", dtype=np.float32)
        os.replace(tmpdir / img.name, img)
        os.replace(tmpdir / hdr.name, hdr)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return hdr
