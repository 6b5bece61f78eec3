"""The embedded reference scenes: shapes, cache, determinism, splits, and that they pose a fusion
problem (the MSI alone cannot give the spectra; the LR-HSI supplies the rest)."""
import hashlib
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import csakd_fast as cf
from conftest import requires
from csakd_fast.data import scenes, srf

# the scenes are built from earthlib spectra, spyndex's Sentinel-2 scene and pyrsr's responses
pytestmark = requires("earthlib", "spyndex", "pyrsr")

BUILD_BUDGET_S = 60.0  # the "building takes under a minute" on this 2-core machine


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All splits, built once into a fresh cache; the build's wall time."""
    cache = tmp_path_factory.mktemp("csakd_cache")
    t = time.perf_counter()
    test = scenes.load_reference_scenes("test", cache_dir=cache)
    seconds = time.perf_counter() - t
    out = {"test": test, "val": scenes.load_reference_scenes("val", cache_dir=cache),
           "train": scenes.load_reference_scenes("train", cache_dir=cache)}
    (folder,) = (cache / "reference_scenes").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"scenes": out, "seconds": seconds, "cache": cache, "folder": folder, "manifest": manifest}


def _sha(cube):
    return hashlib.sha256(np.ascontiguousarray(cube, dtype="<f4").tobytes()).hexdigest()


def _nchw(cube):
    return torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)[None], dtype=np.float64))


def test_build_time(built):
    assert built["seconds"] < BUILD_BUDGET_S, built["seconds"]


def test_wavelengths():
    wl = scenes.reference_wavelengths()
    assert wl.shape == (172,) and wl[0] == 400 and wl[-1] == 2450
    assert (np.diff(wl) > 0).all()
    # the water windows (and the two bands beside each) are gone
    assert not np.isin([1340, 1350, 1400, 1460, 1470, 1780, 1790, 1900, 1960, 1970], wl).any()
    # the paper's 4-band Sentinel-2 and 6-band Landsat-8 settings both fit the grid
    assert srf.srf_matrix("sentinel2", wl).shape == (4, 172)
    assert srf.srf_matrix("landsat8", wl).shape == (6, 172)


def test_shapes_and_values(built):
    s = built["scenes"]
    assert [x.name for x in s["test"]] == ["test"]
    assert [x.name for x in s["val"]] == ["val"]
    assert [x.name for x in s["train"]] == ["train_east_r0", "train_east_r1",
                                            "train_west_r0", "train_west_r1"]
    assert s["test"][0].cube.shape == (128, 128, 172)
    assert s["val"][0].cube.shape == (64, 128, 172)
    assert [x.cube.shape for x in s["train"]] == [(288, 144, 172)] * 2 + [(64, 128, 172)] * 2
    for split in scenes.SPLITS:
        for x in s[split]:
            assert isinstance(x, scenes.Scene)
            assert x.cube.dtype == np.float32 and x.cube.flags.writeable
            assert x.cube.shape[0] % 16 == 0 and x.cube.shape[1] % 16 == 0
            assert np.isfinite(x.cube).all() and x.cube.min() >= 0 and x.cube.max() <= 1
            assert 0.3 < x.cube.max() and x.cube.mean() > 0.05  # reflectance, not noise
            np.testing.assert_array_equal(x.wavelengths, scenes.reference_wavelengths())
            assert (x.cube == 0).mean() < 0.01  # clipping is rare


def test_cache_is_used_and_identical(built, monkeypatch):
    folder = built["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "test.npz", "train.npz",
                                                         "val.npz"]  # no temp files left
    monkeypatch.setenv("CSAKD_CACHE", str(built["cache"]))
    assert scenes.default_cache_dir() == built["cache"]
    t = time.perf_counter()
    again = scenes.load_reference_scenes("train")  # cache_dir from $CSAKD_CACHE
    assert time.perf_counter() - t < 5.0  # read, not rebuilt
    for a, b in zip(again, built["scenes"]["train"]):
        assert a.name == b.name and a.region == b.region
        np.testing.assert_array_equal(a.cube, b.cube)
    for split in scenes.SPLITS:
        recorded = [e["sha256"] for e in built["manifest"]["scenes"][split]]
        assert recorded == [_sha(x.cube) for x in built["scenes"][split]]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CSAKD_CACHE", raising=False)
    assert str(scenes.default_cache_dir()).endswith(".cache/csakd_fast")
    monkeypatch.setenv("CSAKD_CACHE", str(tmp_path / "c"))
    assert scenes.default_cache_dir() == tmp_path / "c"


def test_deterministic_rebuild(built):
    """A second build from scratch (in memory) gives the same bytes as the cached first one."""
    again = scenes.build_reference_scenes(("test",))["test"][0]
    assert _sha(again.cube) == built["manifest"]["scenes"]["test"][0]["sha256"]


def test_manifest_provenance(built):
    m = built["manifest"]
    assert m["recipe_version"] == scenes.RECIPE_VERSION and m["msi_sensor"] == "sentinel2"
    assert set(m["sources"]) == {"library", "library_header", "library_metadata", "sentinel2_scene"}
    assert all(len(v["sha256"]) == 64 for v in m["sources"].values())
    assert m["versions"]["earthlib"] and m["versions"]["spyndex"]


def test_splits_are_disjoint_with_a_guard(built):
    regions = {x.name: x.region for split in scenes.SPLITS for x in built["scenes"][split]}
    train = [n for n in regions if n.startswith("train")]

    def gap(a, b):  # pixels between two (r0, r1, c0, c1) boxes along the axis that separates them
        rows = max(a[0] - b[1], b[0] - a[1])
        cols = max(a[2] - b[3], b[2] - a[3])
        return max(rows, cols)

    for held_out in ("val", "test"):
        for t in train:
            assert gap(regions[held_out], regions[t]) >= 16, (held_out, t)
    assert gap(regions["val"], regions["test"]) >= 16
    # and no test spectrum occurs anywhere in the training scenes
    seen = {row.tobytes() for x in built["scenes"]["train"] for row in x.cube.reshape(-1, 172)}
    assert not any(row.tobytes() in seen for row in built["scenes"]["test"][0].cube.reshape(-1, 172))


def test_msi_is_the_real_sentinel2_scene(built):
    """The cube's Sentinel-2A image equals the real spyndex scene; the variability is invisible."""
    real = scenes._sentinel2_scene(scenes._sources())
    S = srf.srf_matrix("sentinel2", scenes.reference_wavelengths())
    for split in scenes.SPLITS:
        for x in built["scenes"][split]:
            r0, r1, c0, c1 = x.region
            msi = x.cube.astype(np.float64) @ S.T
            assert np.abs(msi - real[r0:r1, c0:c1]).max() < 1e-6
    r = built["scenes"]["train"]
    assert np.abs(r[0].cube - r[1].cube).max() > 0.02  # two realisations differ...
    np.testing.assert_allclose(r[0].cube @ S.T, r[1].cube @ S.T, atol=1e-6)  # ...invisibly


def test_fusion_problem(built):
    """The best per-pixel linear map MSI -> HSI, least-squares fitted on the test region itself,
    leaves a large error (measured: 32.9 dB PSNR, SAM 4.2°); adding what the LR-HSI (×4, box PSF)
    sees of its residual brings it to ≈ 45 dB: the missing part is the LR-HSI's to supply."""
    cube = built["scenes"]["test"][0].cube.astype(np.float64)
    H, W, L = cube.shape
    S = srf.srf_matrix("sentinel2", scenes.reference_wavelengths())
    msi = np.c_[(cube @ S.T).reshape(-1, 4), np.ones(H * W)]
    coef, *_ = np.linalg.lstsq(msi, cube.reshape(-1, L), rcond=None)
    linear = (msi @ coef).reshape(H, W, L)
    target = _nchw(cube)
    psnr_linear = float(cf.metrics.psnr(_nchw(linear), target)[0])
    sam_linear = float(cf.metrics.sam(_nchw(linear), target)[0])
    print(f"linear MSI->HSI fit on the test region: PSNR {psnr_linear:.2f} dB, SAM {sam_linear:.2f}°")
    assert psnr_linear < 35.0 and sam_linear > 3.0

    def down(x):
        return F.avg_pool2d(x, 4)

    def up(x):
        return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)

    lr = down(target)
    fused = _nchw(linear) + up(lr - down(_nchw(linear)))
    psnr_fused = float(cf.metrics.psnr(fused, target)[0])
    psnr_bicubic = float(cf.metrics.psnr(up(lr), target)[0])
    print(f"+ LR residual: {psnr_fused:.2f} dB; bicubic LR-HSI alone: {psnr_bicubic:.2f} dB")
    assert psnr_fused > psnr_linear + 6.0
    assert psnr_fused > psnr_bicubic + 6.0  # the MSI is needed too


def test_abundances_match_scipy_nnls():
    """The batched solver returns scipy's nnls minimiser pixel by pixel."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    A = rng.uniform(0.0, 0.6, (4, 9))
    A[:, -1] = 0  # a shade column, as in the recipe
    Y = rng.uniform(0.0, 0.5, (500, 4))
    got = scenes._abundances(Y, A)
    As = np.vstack([A, np.ones((1, 9)), np.sqrt(scenes._RIDGE) * np.eye(9)])
    want = np.stack([nnls(As, np.r_[y, 1.0, np.zeros(9)])[0] for y in Y])
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split: expected one of 'train', 'val', 'test', got 'testing'"):
        scenes.load_reference_scenes("testing", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        scenes.build_reference_scenes(("train", "holdout"))


def test_corrupt_cache_is_named(built, tmp_path):
    folder = tmp_path / "reference_scenes" / built["folder"].name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_bytes((built["folder"] / "manifest.json").read_bytes())
    (folder / "val.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"val\.npz: unreadable reference-scene cache"):
        scenes.load_reference_scenes("val", cache_dir=tmp_path)


def test_describe():
    text = scenes.describe()
    for word in ("earthlib", "MIT", "spyndex", "Copernicus", "PROSAIL", "simulated", "Apache-2.0",
                 "train", "val", "test"):
        assert word in text
