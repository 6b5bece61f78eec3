"""Every reader on small files written here, write→read round trips, and corrupt files."""
import warnings

import numpy as np
import pytest

from conftest import requires
from csakd_fast.data import CAVE_WAVELENGTHS, Cube, read_cube, write_cube

H, W, L = 6, 5, 4   # all different, so that a transposed read cannot pass


@pytest.fixture
def cube():
    return np.random.default_rng(0).random((H, W, L)).astype(np.float32) * 100


WL = np.array([450.0, 550.5, 650.0, 850.25])


def _check(c, data, wl=WL):
    assert isinstance(c, Cube)
    assert c.data.dtype == np.float32 and c.data.shape == data.shape
    np.testing.assert_array_equal(c.data, data)
    if wl is None:
        assert c.wavelengths is None
    else:
        np.testing.assert_allclose(c.wavelengths, wl, rtol=1e-12)


# ------------------------------------------------------------------ MATLAB

def test_mat_v5_with_wavelengths_and_key(tmp_path, cube):
    import scipy.io

    p = tmp_path / "scene.mat"
    scipy.io.savemat(p, {"ref": cube.astype(np.float64), "wavelength": WL[None, :], "lbl": np.ones((H, W))})
    c = read_cube(p)
    _check(c, cube)
    assert c.path == p and c.name == "scene"
    two = tmp_path / "two.mat"
    scipy.io.savemat(two, {"a": cube, "b": cube * 2})
    with pytest.raises(ValueError, match=r"two\.mat.*several 3-D arrays.*key"):
        read_cube(two)
    _check(read_cube(two, key="b", wavelengths=WL), cube * 2)
    with pytest.raises(ValueError, match=r"two\.mat.*no variable 'c'"):
        read_cube(two, key="c")
    with pytest.raises(ValueError, match=r"scene\.mat.*differ"):
        read_cube(p, wavelengths=WL + 1)


def test_mat_v73_via_h5py_is_transposed_back(tmp_path, cube):
    import h5py

    p = tmp_path / "v73.mat"
    with h5py.File(p, "w", userblock_size=512) as f:      # what MATLAB's save -v7.3 writes
        # MATLAB (H, W, L) column-major = HDF5 dataset (L, W, H)
        ds = f.create_dataset("rad", data=cube.transpose(2, 1, 0))
        ds.attrs["MATLAB_class"] = np.bytes_("single")
        f.create_dataset("wavelengths", data=WL[:, None])  # MATLAB 1×L row vector
    with open(p, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    _check(read_cube(p), cube)
    # band_axis refers to MATLAB's view (H, W, L); here it contradicts the file's 4 wavelengths
    with pytest.raises(ValueError, match=r"v73\.mat.*inconsistent wavelengths.*expected 6 band centres"):
        read_cube(p, band_axis=0)
    q = tmp_path / "bands_first.mat"
    with h5py.File(q, "w") as f:                          # MATLAB (L, H, W)
        f.create_dataset("cube", data=cube.transpose(2, 0, 1).transpose(2, 1, 0))
    _check(read_cube(q, band_axis=0, wavelengths=WL), cube)


# ------------------------------------------------------------------ numpy

def test_npy_needs_given_wavelengths_and_band_axis(tmp_path, cube):
    p = tmp_path / "c.npy"
    np.save(p, cube)
    _check(read_cube(p), cube, None)
    _check(read_cube(p, wavelengths=WL), cube)
    q = tmp_path / "bands_first.npy"
    np.save(q, cube.transpose(2, 0, 1))
    _check(read_cube(q, band_axis=0, wavelengths=WL), cube)
    with pytest.raises(ValueError, match="expected 4 band centres"):
        read_cube(p, wavelengths=WL[:3])
    with pytest.raises(ValueError, match="band_axis"):
        read_cube(p, band_axis=3)


def test_npz_reads_its_wavelengths(tmp_path, cube):
    p = tmp_path / "c.npz"
    np.savez(p, data=cube, wavelengths=WL)
    _check(read_cube(p), cube)
    _check(read_cube(p, wavelengths=WL.copy()), cube)   # agreeing: fine
    with pytest.raises(ValueError, match="differ"):
        read_cube(p, wavelengths=WL[::-1])
    bad = tmp_path / "badwl.npz"
    np.savez(bad, data=cube, wavelengths=WL[:2])
    with pytest.raises(ValueError, match=r"badwl\.npz.*inconsistent wavelengths"):
        read_cube(bad)


# ------------------------------------------------------------------ ENVI

@requires("spectral")
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_via_spectral_with_micrometres(tmp_path, cube, interleave):
    from spectral.io import envi

    hdr = tmp_path / "scene.hdr"
    envi.save_image(str(hdr), cube, interleave=interleave, ext=".dat",
                    metadata={"wavelength": list(WL / 1000), "wavelength units": "Micrometers"})
    _check(read_cube(hdr), cube)
    _check(read_cube(tmp_path / "scene.dat"), cube)      # the data file finds its header


@requires("spectral")
def test_envi_wavelength_units_and_counts(tmp_path, cube):
    from spectral.io import envi

    idx = tmp_path / "idx.hdr"
    envi.save_image(str(idx), cube, metadata={"wavelength": [1, 2, 3, 4], "wavelength units": "Index"})
    with pytest.warns(UserWarning, match="not a length"):
        c = read_cube(idx, wavelengths=WL)
    _check(c, cube)                                            # the given centres are used instead
    wrong = tmp_path / "wrong.hdr"
    envi.save_image(str(wrong), cube, metadata={"wavelength": [500, 600], "wavelength units": "nm"})
    with pytest.raises(ValueError, match=r"wrong\.hdr.*inconsistent wavelengths.*expected 4"):
        read_cube(wrong)


@requires("spectral")
def test_envi_corrupt_files_name_the_file(tmp_path, cube):
    from spectral.io import envi

    hdr = tmp_path / "t.hdr"
    envi.save_image(str(hdr), cube, ext=".img")
    img = tmp_path / "t.img"
    img.write_bytes(img.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"t\.hdr.*truncated"):
        read_cube(hdr)
    junk = tmp_path / "junk.hdr"
    junk.write_text("not an envi header\n")
    with pytest.raises(ValueError, match=r"junk\.hdr"):
        read_cube(junk)
    lonely = tmp_path / "lonely.img"
    lonely.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"lonely\.img.*no ENVI header"):
        read_cube(lonely)


# ------------------------------------------------------------------ TIFF

def test_tiff_band_axis_from_the_files_axes(tmp_path, cube):
    import tifffile

    pages = tmp_path / "pages.tif"                         # L pages of (H, W): axes QYX
    tifffile.imwrite(pages, cube.transpose(2, 0, 1), photometric="minisblack")
    _check(read_cube(pages, wavelengths=WL), cube)
    contig = tmp_path / "contig.tiff"                      # one page, L interleaved samples: YXS
    tifffile.imwrite(contig, cube, photometric="minisblack", planarconfig="contig")
    _check(read_cube(contig), cube, None)
    # the same bytes read with an explicit band axis of the stored array
    _check(read_cube(pages, band_axis=0), cube, None)
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, cube[..., 0])
    with pytest.raises(ValueError, match=r"single\.tif.*no band axis"):
        read_cube(single)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((2, 3, H, W), np.float32), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(ValueError, match=r"stack\.tif.*several candidate band axes.*band_axis"):
        read_cube(stack)


def test_tiff_garbage(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\0garbage garbage")
    with pytest.raises(ValueError, match=r"broken\.tif: (no image|not a readable TIFF)"):
        read_cube(p)


# ------------------------------------------------------------------ PNG folders (CAVE)

def _write_cave(folder, n_bands=31, size=(5, 4), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    bands = rng.integers(0, 65535, size=(n_bands,) + size, dtype=np.uint16)
    folder.mkdir(parents=True)
    for b in range(n_bands):
        Image.fromarray(bands[b]).save(folder / f"{folder.name}_{b + 1:02d}.png")
    return np.moveaxis(bands, 0, -1).astype(np.float32)


@requires("PIL")
def test_cave_png_folder_nested_16bit(tmp_path):
    scene = tmp_path / "balloons_ms"
    expected = _write_cave(scene / "balloons_ms")           # CAVE: <scene>/<scene>/<scene>_01.png
    (scene / "balloons_RGB.bmp").write_bytes(b"BM")          # CAVE's RGB preview is ignored (not PNG)
    c = read_cube(scene)
    _check(c, expected, None)                                # no wavelengths unless asked for
    assert c.data.max() > 255                                # 16-bit values kept
    _check(read_cube(scene, wavelengths="cave"), expected, CAVE_WAVELENGTHS)
    np.testing.assert_array_equal(CAVE_WAVELENGTHS, np.arange(400, 701, 10))
    few = tmp_path / "few"
    _write_cave(few, n_bands=4)
    with pytest.raises(ValueError, match="expected 4 band centres.*got 31"):
        read_cube(few, wavelengths="cave")


@requires("PIL")
def test_cave_png_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    gap = tmp_path / "gap"
    _write_cave(gap, n_bands=5)
    (gap / "gap_03.png").unlink()
    with pytest.raises(ValueError, match=r"gap.*not consecutive.*missing \[3\]"):
        read_cube(gap)
    size = tmp_path / "size"
    _write_cave(size, n_bands=3)
    Image.fromarray(np.zeros((7, 7), np.uint16)).save(size / "size_02.png")
    with pytest.raises(ValueError, match=r"size_02\.png.*differs"):
        read_cube(size)
    depth = tmp_path / "depth"
    _write_cave(depth, n_bands=3)
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(depth / "depth_03.png")
    with pytest.raises(ValueError, match=r"depth_03\.png.*bit depth"):
        read_cube(depth)
    broken = tmp_path / "broken"
    _write_cave(broken, n_bands=3)
    (broken / "broken_02.png").write_bytes((broken / "broken_02.png").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"broken_02\.png.*not a readable PNG"):
        read_cube(broken)
    colour = tmp_path / "colour"
    _write_cave(colour, n_bands=2)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (5, 4, 3), dtype=np.uint8)).save(colour / "colour_02.png")
    with pytest.raises(ValueError, match=r"colour_02\.png.*colour image"):
        read_cube(colour)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*no PNG"):
        read_cube(empty)


# ------------------------------------------------------------------ corrupt / inconsistent files

def test_corrupt_and_inconsistent_files_name_the_file(tmp_path, cube):
    bad_mat = tmp_path / "bad.mat"
    bad_mat.write_bytes(b"this is not a MAT-file at all" * 10)
    with pytest.raises(ValueError, match=r"bad\.mat"):
        read_cube(bad_mat)
    npy = tmp_path / "trunc.npy"
    np.save(npy, cube)
    npy.write_bytes(npy.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"trunc\.npy.*not a readable numpy"):
        read_cube(npy)
    npz = tmp_path / "junk.npz"
    npz.write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        read_cube(npz)
    flat = tmp_path / "flat.npy"
    np.save(flat, cube[..., 0])
    with pytest.raises(ValueError, match=r"flat\.npy.*3-D"):
        read_cube(flat)
    nan = tmp_path / "nan.npy"
    bad = cube.copy()
    bad[1, 2, 3] = np.nan
    np.save(nan, bad)
    with pytest.raises(ValueError, match=r"nan\.npy.*1 NaN/Inf"):
        read_cube(nan)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy"):
        read_cube(pickled)
    no3d = tmp_path / "no3d.npz"
    np.savez(no3d, a=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"no3d\.npz.*no 3-D numeric array"):
        read_cube(no3d)
    with pytest.raises(ValueError, match="no such file"):
        read_cube(tmp_path / "missing.npy")
    other = tmp_path / "cube.xyz"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="expected a .mat"):
        read_cube(other)
    with pytest.raises(ValueError, match="key: not used"):
        read_cube(flat, key="x")


# ------------------------------------------------------------------ writing

@requires("spectral")
@pytest.mark.parametrize("name", ["out.npz", "out.mat", "out.hdr", "out.img", "out.tif", "out.tiff"])
def test_write_read_round_trip_with_wavelengths(tmp_path, cube, name):
    p = tmp_path / "sub" / name
    written = write_cube(p, cube, WL)
    assert written.exists()
    _check(read_cube(written), cube)
    if name.endswith((".hdr", ".img")):
        assert (tmp_path / "sub" / "out.hdr").exists() and (tmp_path / "sub" / "out.img").exists()
        _check(read_cube(tmp_path / "sub" / "out.img"), cube)
    # nothing but the target file(s) in the folder: the temporary files are gone
    assert all(not f.name.startswith(".") for f in (tmp_path / "sub").iterdir())


def test_write_npy_and_overwrite_atomically(tmp_path, cube):
    p = tmp_path / "out.npy"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        write_cube(p, cube, WL)
    assert any("wavelengths are not written" in str(x.message) for x in w)
    _check(read_cube(p), cube, None)
    bad = cube.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="data: expected finite"):
        write_cube(p, bad)
    _check(read_cube(p), cube, None)                           # the old file is untouched
    import torch

    write_cube(p, torch.from_numpy(cube * 2))
    _check(read_cube(p), cube * 2, None)
    assert [f.name for f in tmp_path.iterdir()] == ["out.npy"]


def test_write_validation(tmp_path, cube):
    with pytest.raises(ValueError, match="expected a .npy"):
        write_cube(tmp_path / "x.png", cube)
    with pytest.raises(ValueError, match=r"data: expected a non-empty cube"):
        write_cube(tmp_path / "x.npy", cube[..., 0])
    with pytest.raises(ValueError, match="expected 4 band centres"):
        write_cube(tmp_path / "x.npz", cube, WL[:2])
    with pytest.raises(ValueError, match="key"):
        write_cube(tmp_path / "x.mat", cube, key="1bad")
    write_cube(tmp_path / "k.mat", cube, key="hsi")
    _check(read_cube(tmp_path / "k.mat", key="hsi"), cube, None)
