"""FusionDataset: normalisation, alignment under augmentation, determinism, evaluation tiles."""
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import requires
from csakd_fast.data import (Cube, FusionDataset, apply_srf, denormalize, normalize, spatial_degrade,
                             to_unit, write_cube)

L, M, S = 6, 3, 4


def _cube(H, W, seed, lo=10.0, hi=500.0):
    return (lo + (hi - lo) * np.random.default_rng(seed).random((H, W, L))).astype(np.float32)


SRF = np.random.default_rng(42).random((M, L))
SRF_N = SRF / SRF.sum(1, keepdims=True)


def _unit(x):
    return (x.numpy().transpose(1, 2, 0).astype(np.float64) + 1) / 2


# ------------------------------------------------------------------ normalisation

def test_normalize_denormalize_round_trip_numpy_torch_and_batched():
    c = _cube(8, 8, 0)
    unit, vmin, vmax = normalize(c)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    assert (vmin, vmax) == (float(c.min()), float(c.max()))
    signed = unit * 2 - 1
    np.testing.assert_allclose(denormalize(signed, vmin, vmax), c, rtol=1e-5)
    t = torch.from_numpy(signed.transpose(2, 0, 1).copy())
    np.testing.assert_allclose(denormalize(t, vmin, vmax).numpy().transpose(1, 2, 0), c, rtol=1e-5)
    batch = torch.stack([t, -t])
    vmins, vmaxs = torch.tensor([vmin, 0.0], dtype=torch.float64), torch.tensor([vmax, 2.0], dtype=torch.float64)
    out = denormalize(batch, vmins, vmaxs)
    torch.testing.assert_close(out[0], denormalize(t, vmin, vmax))
    torch.testing.assert_close(out[1], to_unit(-t) * 2.0)
    with pytest.raises(ValueError, match="one value per sample"):
        denormalize(batch, torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="constant"):
        normalize(np.full((4, 4, 2), 3.0))


def test_eval_items_invert_to_the_original_cube():
    cubes = [_cube(16, 24, 1), _cube(20, 12, 2, lo=-5.0, hi=3.0)]
    ds = FusionDataset(cubes, SRF, mode="eval")
    assert len(ds) == 2 and ds.names == ["cube0", "cube1"]
    for k, c in enumerate(cubes):
        item = ds[k]
        assert item["hr_hsi"].shape == (L,) + c.shape[:2] and item["hr_hsi"].dtype == torch.float32
        assert item["lr_hsi"].shape == (L, c.shape[0] // S, c.shape[1] // S)
        assert item["hr_msi"].shape == (M,) + c.shape[:2]
        for key in ("hr_hsi", "lr_hsi", "hr_msi"):
            assert item[key].min() >= -1 and item[key].max() <= 1
        back = denormalize(item["hr_hsi"], item["vmin"], item["vmax"]).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(back, c, rtol=1e-5, atol=1e-5 * (c.max() - c.min()))
        # LR-HSI and HR-MSI are simulated from the [0, 1] cube with the row-normalised SRF
        unit = (c.astype(np.float64) - c.min()) / (c.max() - c.min())
        np.testing.assert_allclose(_unit(item["lr_hsi"]), spatial_degrade(unit, S), atol=1e-6)
        np.testing.assert_allclose(_unit(item["hr_msi"]), apply_srf(unit, SRF_N), atol=1e-6)
    loader = torch.utils.data.DataLoader(FusionDataset([cubes[0], cubes[0] * 2], SRF, mode="eval"), batch_size=2)
    batch = next(iter(loader))
    assert batch["vmin"].dtype == torch.float64 and batch["vmin"].shape == (2,)
    back = denormalize(batch["hr_hsi"], batch["vmin"], batch["vmax"])
    np.testing.assert_allclose(back[1].numpy().transpose(1, 2, 0), cubes[0] * 2, rtol=1e-5)


# ------------------------------------------------------------------ augmentation keeps LR/HR aligned

def test_augmented_whole_crops_stay_exact_degradations():
    """Crop = the whole (square) cube: every flip/rotation of HR must come with exactly the LR and
    MSI that the degradation gives for the flipped/rotated HR."""
    c = _cube(16, 16, 3)
    ds = FusionDataset([c], SRF, crop_size=16, crops_per_epoch=24, snr_lr=None, seed=1)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        hr = _unit(item["hr_hsi"])
        np.testing.assert_allclose(_unit(item["lr_hsi"]), spatial_degrade(hr, S), atol=2e-6)
        np.testing.assert_allclose(_unit(item["hr_msi"]), apply_srf(hr, SRF_N), atol=2e-6)
        seen.add(hr[0, 0, 0].round(6))
    assert len(seen) >= 4   # several distinct orientations were drawn


def test_planted_marker_is_followed_by_lr_and_msi():
    c = np.full((48, 40, L), 1.0, np.float32)
    c[21, 26, :] = 100.0                                  # a bright pixel in HR block (5, 6)
    ds = FusionDataset([c], SRF, crop_size=32, crops_per_epoch=40, snr_lr=None, seed=3)
    followed = 0
    for i in range(len(ds)):
        item = ds[i]
        hr = item["hr_hsi"][0]
        if hr.max() < 0.5:                                # this crop missed the marker
            continue
        y, x = divmod(int(hr.argmax()), hr.shape[1])
        ly, lx = divmod(int(item["lr_hsi"][0].argmax()), item["lr_hsi"].shape[2])
        my, mx = divmod(int(item["hr_msi"][0].argmax()), item["hr_msi"].shape[2])
        assert (ly, lx) == (y // S, x // S)
        assert (my, mx) == (y, x)
        followed += 1
    assert followed >= 10


def test_crops_are_aligned_to_the_scale():
    c = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None] * 40
                        + np.arange(36, dtype=np.float32)[None, :, None], (40, 36, L)).copy()
    ds = FusionDataset([c], SRF, crop_size=12, crops_per_epoch=30, augment=False, snr_lr=None)
    for i in range(len(ds)):
        hr = denormalize(ds[i]["hr_hsi"], ds[i]["vmin"], ds[i]["vmax"]).numpy()
        y0, x0 = divmod(round(float(hr[0, 0, 0])), 40)
        assert y0 % S == 0 and x0 % S == 0


# ------------------------------------------------------------------ noise and determinism

def test_training_noise_is_35_db_on_the_lr_hsi_by_default():
    c = _cube(64, 64, 4)
    L64 = c.shape[2]
    noisy = FusionDataset([c], SRF, crop_size=64, crops_per_epoch=2, augment=False, seed=0)
    clean = FusionDataset([c], SRF, crop_size=64, crops_per_epoch=2, augment=False, seed=0, snr_lr=None)
    assert noisy.snr_lr == 35.0 and clean.snr_lr is None
    a, b = noisy[0], clean[0]
    torch.testing.assert_close(a["hr_hsi"], b["hr_hsi"])
    torch.testing.assert_close(a["hr_msi"], b["hr_msi"])      # no MSI noise by default
    x = _unit(b["lr_hsi"])
    n = _unit(a["lr_hsi"]) - x
    assert x.size == 16 * 16 * L64
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean(n ** 2))
    assert snr == pytest.approx(35.0, abs=0.5)
    assert not torch.equal(noisy[0]["lr_hsi"], noisy[1]["lr_hsi"])   # fresh per sample


def test_determinism_epochs_and_workers():
    cubes = [_cube(32, 32, 5), _cube(24, 40, 6)]
    kw = dict(crop_size=16, crops_per_epoch=8, seed=7)
    a, b = FusionDataset(cubes, SRF, **kw), FusionDataset(cubes, SRF, **kw)
    for i in (0, 5, 7):
        for key in ("lr_hsi", "hr_msi", "hr_hsi"):
            assert torch.equal(a[i][key], b[i][key])
        assert torch.equal(a[i]["lr_hsi"], a[i]["lr_hsi"])      # the same item twice: the same draw
    first = [a[i]["hr_hsi"] for i in range(8)]
    a.set_epoch(1)
    assert any(not torch.equal(first[i], a[i]["hr_hsi"]) for i in range(8))
    a.set_epoch(0)
    assert all(torch.equal(first[i], a[i]["hr_hsi"]) for i in range(8))
    other = FusionDataset(cubes, SRF, **{**kw, "seed": 8})
    assert any(not torch.equal(first[i], other[i]["hr_hsi"]) for i in range(8))

    def batches(workers):
        loader = torch.utils.data.DataLoader(b, batch_size=4, shuffle=False, num_workers=workers)
        return [x["lr_hsi"] for x in loader]

    for x, y in zip(batches(0), batches(2)):
        assert torch.equal(x, y)


def test_train_len_and_cube_sampling():
    cubes = [_cube(32, 32, 5), _cube(16, 64, 6), _cube(64, 64, 7)]
    ds = FusionDataset(cubes, SRF, crop_size=16)
    assert len(ds) == 4 + 4 + 16                 # one pass of C×C tiles over each cube by default
    names = [ds[i]["name"] for i in range(len(ds))]
    assert names.count("cube2") == 16 and names.count("cube0") == 4   # stratified ∝ area
    assert len(FusionDataset(cubes, SRF, crop_size=16, crops_per_epoch=5)) == 5
    with pytest.raises(IndexError):
        ds[len(ds)]


# ------------------------------------------------------------------ evaluation tiles

def test_eval_tiles_cover_the_cube():
    c = _cube(40, 28, 8)
    ds = FusionDataset([c], SRF, mode="eval", tile=16)
    # rows: 0, 16, 24 (moved back to end at 40); columns: 0, 12 (28 − 16)
    assert len(ds) == 3 * 2
    names = [ds[i]["name"] for i in range(len(ds))]
    assert names[0] == "cube0@0,0" and "cube0@24,12" in names
    cover = np.zeros((40, 28), bool)
    for i in range(len(ds)):
        item = ds[i]
        y, x = map(int, item["name"].split("@")[1].split(","))
        assert item["hr_hsi"].shape == (L, 16, 16) and item["lr_hsi"].shape == (L, 4, 4)
        full = ds.cube_info(0)
        back = denormalize(item["hr_hsi"], item["vmin"], item["vmax"]).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(back, c[y:y + 16, x:x + 16], rtol=1e-5)
        cover[y:y + 16, x:x + 16] = True
    assert cover.all() and full["shape"] == (40, 28, L)


# ------------------------------------------------------------------ sources, wavelengths, SRFs

@dataclass
class Scene:   # the shape of csakd_fast.data.scenes.Scene
    name: str
    cube: np.ndarray
    wavelengths: np.ndarray


def test_sources_paths_cubes_scenes_and_sensor_srf(tmp_path, monkeypatch):
    wl = np.linspace(420, 880, L)
    c0, c1, c2 = _cube(16, 16, 9), _cube(16, 16, 10), _cube(18, 17, 11)
    write_cube(tmp_path / "a.npz", c0, wl)
    calls = []

    def srf_matrix(sensor, wavelengths):
        calls.append(sensor)
        return np.tile(np.linspace(1, 2, len(wavelengths)), (M, 1)) / np.linspace(1, 2, len(wavelengths)).sum()

    fake = types.ModuleType("csakd_fast.data.srf")
    fake.srf_matrix = srf_matrix
    monkeypatch.setitem(sys.modules, "csakd_fast.data.srf", fake)
    with pytest.warns(UserWarning, match=r"18×17 trimmed to 16×16"):
        ds = FusionDataset([tmp_path / "a.npz", Cube(c1, wl), Scene("field", c2, wl)], "mysensor",
                           mode="eval")
    assert ds.names == ["a", "cube1", "field"] and calls == ["mysensor"]   # resolved once per grid
    assert ds.msi_bands == M and ds.bands == L
    np.testing.assert_allclose(ds.cube_info(0)["wavelengths"], wl)
    assert ds[2]["hr_hsi"].shape == (L, 16, 16)
    with pytest.raises(ValueError, match="has no band centres"):
        FusionDataset([c0], "mysensor")
    ds2 = FusionDataset([c0], "mysensor", wavelengths=wl, mode="eval", names=["mine"])
    assert ds2.names == ["mine"]
    with pytest.raises(ValueError, match="differ"):
        FusionDataset([Cube(c1, wl)], "mysensor", wavelengths=wl + 1)
    with pytest.raises(ValueError, match="differ"):
        FusionDataset([tmp_path / "a.npz"], SRF, wavelengths=wl + 1)


def test_dataset_validation():
    c = _cube(16, 16, 12)
    with pytest.raises(ValueError, match="crop_size: expected a multiple of scale=4"):
        FusionDataset([c], SRF, crop_size=10)
    with pytest.raises(ValueError, match="crop_size: expected at most"):
        FusionDataset([c], SRF, crop_size=32)
    with pytest.raises(ValueError, match="mode"):
        FusionDataset([c], SRF, mode="test")
    with pytest.raises(ValueError, match="same number of bands"):
        FusionDataset([c, c[..., :4]], SRF, mode="eval")
    with pytest.raises(ValueError, match=r"srf: expected an \(M, 6\) matrix"):
        FusionDataset([c], np.ones((2, 5)))
    with pytest.raises(ValueError, match="constant"):
        FusionDataset([np.ones((16, 16, L), np.float32)], SRF)
    bad = c.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"cube0.*NaN"):
        FusionDataset([bad], SRF)
    with pytest.raises(ValueError, match="tile"):
        FusionDataset([c], SRF, mode="eval", tile=6)
    with pytest.raises(ValueError, match="snr_lr"):
        FusionDataset([c], SRF, snr_lr="35")
    with pytest.raises(ValueError, match="names"):
        FusionDataset([c, c], SRF, names=["one"])
    with pytest.raises(ValueError, match="at least one cube"):
        FusionDataset([], SRF)


@requires("pyrsr")
def test_real_sensor_srf_once_the_srf_module_is_there():
    """Integration with csakd_fast.data.srf (built on another branch): the SRF of a real sensor
    resolved on an AVIRIS-like grid, rows summing to 1, HR-MSI = SRF · HR."""
    srf = pytest.importorskip("csakd_fast.data.srf")
    wl = np.linspace(400.0, 2450.0, 172)
    c = np.random.default_rng(0).random((8, 8, 172)).astype(np.float32)
    ds = FusionDataset([Cube(c, wl)], "sentinel2", mode="eval")
    m = srf.srf_matrix("sentinel2", wl)
    np.testing.assert_allclose(ds.srf, m, atol=1e-12)
    np.testing.assert_allclose(ds.srf.sum(1), 1.0, atol=1e-12)
    unit = (c.astype(np.float64) - c.min()) / (c.max() - c.min())
    np.testing.assert_allclose(_unit(ds[0]["hr_msi"]), apply_srf(unit, m), atol=1e-6)
