"""Wald's-protocol degradation: PSF, blur/decimation, SRF, noise, misregistration, validation."""
import math
import sys
import types

import numpy as np
import pytest
import torch

from csakd_fast.data import degrade as D


def _cube(H=16, W=12, L=3, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).random((H, W, L)).astype(dtype)


def _reference_lr(x, s, sigma=None, shift=(0.0, 0.0)):
    """LR(i, j) = Σ_tu wy[t] wx[u] x(i·s + oy[t], j·s + ox[u]), half-sample symmetric border,
    written as plain loops."""
    wy, oy = D.gaussian_psf(s, sigma, shift=shift[0])
    wx, ox = D.gaussian_psf(s, sigma, shift=shift[1])
    H, W, L = x.shape

    def at(n, size):   # half-sample symmetric extension: ... b a | a b ... z | z y ...
        period = 2 * size
        n = n % period
        return n if n < size else period - 1 - n

    out = np.zeros((H // s, W // s, L))
    for i in range(H // s):
        for j in range(W // s):
            for t in range(len(wy)):
                for u in range(len(wx)):
                    out[i, j] += wy[t] * wx[u] * x[at(i * s + oy[t], H), at(j * s + ox[u], W)]
    return out


# ------------------------------------------------------------------ the PSF

@pytest.mark.parametrize("s", [2, 3, 4, 5, 8])
def test_psf_sums_to_one_symmetric_and_fwhm_equals_scale(s):
    w, o = D.gaussian_psf(s)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(w, w[::-1], rtol=0, atol=1e-15)
    # symmetric about the block centre (s-1)/2
    np.testing.assert_allclose(o + o[::-1], np.full(len(o), s - 1))
    sigma = D.fwhm_sigma(s)
    assert math.exp(-(s / 2) ** 2 / (2 * sigma ** 2)) == pytest.approx(0.5, rel=1e-12)  # FWHM = s
    assert D.fwhm_sigma(4) == pytest.approx(4 / 2.35482, rel=1e-5)
    k = D.psf_kernel2d(s)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(k, k[::-1], atol=1e-16)
    np.testing.assert_allclose(k, k[:, ::-1], atol=1e-16)
    np.testing.assert_allclose(k, k.T, atol=1e-16)
    assert k.argmax() // k.shape[1] in (len(o) // 2 - 1, len(o) // 2)


def test_psf_covers_four_sigma_and_custom_sigma():
    w, o = D.gaussian_psf(4, sigma=1.0)
    np.testing.assert_array_equal(o, np.arange(-2, 6))        # integers within 4σ of 1.5
    assert w.sum() == pytest.approx(1.0)
    w_small, o_small = D.gaussian_psf(2, sigma=0.05)   # radius floor: never an empty kernel
    assert len(o_small) >= 2 and w_small.sum() == pytest.approx(1.0)


# ------------------------------------------------------------------ blur and decimation

@pytest.mark.parametrize("s", [4, 3])
def test_spatial_degrade_matches_explicit_loops(s):
    x = _cube(4 * s, 3 * s, 2, seed=s)
    np.testing.assert_allclose(D.spatial_degrade(x, s), _reference_lr(x, s), rtol=0, atol=1e-13)
    np.testing.assert_allclose(D.spatial_degrade(x, s, sigma=1.1, shift=(0.3, -1.7)),
                               _reference_lr(x, s, 1.1, (0.3, -1.7)), rtol=0, atol=1e-13)


def test_large_cubes_are_processed_in_slabs_without_changing_the_result(monkeypatch):
    x = _cube(12, 8, 5, seed=9)
    srf = np.random.default_rng(3).random((2, 5))
    monkeypatch.setattr(D, "_CHUNK", 100)             # forces one band / a few rows per slab
    np.testing.assert_allclose(D.spatial_degrade(x, 4), _reference_lr(x, 4), rtol=0, atol=1e-13)
    np.testing.assert_allclose(D.apply_srf(x, srf), np.einsum("hwl,ml->hwm", x, srf), rtol=1e-13)


def test_blur_of_constant_is_constant():
    x = np.full((16, 20, 3), 0.37)
    np.testing.assert_allclose(D.blur(x, 4), x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(D.spatial_degrade(x, 4), np.full((4, 5, 3), 0.37), rtol=0, atol=1e-15)
    np.testing.assert_allclose(D.spatial_degrade(x, 4, shift=(0.4, -2.3)), np.full((4, 5, 3), 0.37),
                               rtol=0, atol=1e-15)


def test_decimate_picks_block_centre_samples_and_composes_with_blur():
    x = np.arange(8 * 12, dtype=np.float64).reshape(8, 12, 1)
    d = D.decimate(x, 4)
    assert d.shape == (2, 3, 1)
    np.testing.assert_array_equal(d[..., 0], x[1::4, 1::4, 0])   # ⌊(4−1)/2⌋ = 1
    np.testing.assert_array_equal(D.decimate(np.arange(9 * 9.).reshape(9, 9, 1), 3)[..., 0],
                                  np.arange(81.).reshape(9, 9)[1::3, 1::3])
    y = _cube(16, 12, 2)
    np.testing.assert_allclose(D.decimate(D.blur(y, 4), 4), D.spatial_degrade(y, 4), rtol=0, atol=1e-15)
    np.testing.assert_allclose(D.decimate(D.blur(y, 4, shift=(0.5, 1.25)), 4),
                               D.spatial_degrade(y, 4, shift=(0.5, 1.25)), rtol=0, atol=1e-15)


def test_delta_lands_on_its_block_with_the_psf_weights():
    s = 4
    x = np.zeros((32, 32, 1))
    r, c = 13, 18                                   # LR pixel (3, 4): blocks 12..15, 16..19
    x[r, c, 0] = 1.0
    lr = D.spatial_degrade(x, s)[..., 0]
    assert np.unravel_index(lr.argmax(), lr.shape) == (r // s, c // s)
    w, o = D.gaussian_psf(s)
    expected = np.zeros_like(lr)
    for i in range(lr.shape[0]):
        for j in range(lr.shape[1]):
            ty, tx = np.flatnonzero(i * s + o == r), np.flatnonzero(j * s + o == c)
            if len(ty) and len(tx):
                expected[i, j] = w[ty[0]] * w[tx[0]]
    np.testing.assert_allclose(lr, expected, rtol=0, atol=1e-15)
    block = np.zeros((32, 32, 1))
    block[12:16, 16:20] = 1.0      # deltas on every pixel of one block: the PSF taps partition unity
    assert D.spatial_degrade(block, s).sum() == pytest.approx(1.0, abs=1e-14)


def test_degradation_commutes_with_flips_and_rotations():
    x = _cube(16, 16, 2, seed=3)
    lr = D.spatial_degrade(x, 4)
    np.testing.assert_allclose(D.spatial_degrade(x[::-1].copy(), 4), lr[::-1], atol=1e-14)
    np.testing.assert_allclose(D.spatial_degrade(x[:, ::-1].copy(), 4), lr[:, ::-1], atol=1e-14)
    np.testing.assert_allclose(D.spatial_degrade(np.rot90(x).copy(), 4), np.rot90(lr), atol=1e-14)


# ------------------------------------------------------------------ misregistration

@pytest.mark.parametrize("d", [(4, -8), (1, -2), (3, 5)])
def test_integer_misregistration_equals_roll(d):
    s = 4
    x = _cube(48, 48, 2, seed=5)
    shifted = D.spatial_degrade(x, s, shift=d)
    rolled = D.spatial_degrade(np.roll(x, d, axis=(0, 1)), s)
    m = 4   # LR pixels whose PSF (radius ≈ 7 HR px) plus the shift stays inside the image
    np.testing.assert_allclose(shifted[m:-m, m:-m], rolled[m:-m, m:-m], rtol=0, atol=1e-14)
    if d[0] % s == 0 and d[1] % s == 0:   # a whole-LR-pixel shift is a roll of the LR image
        lr = D.spatial_degrade(x, s)
        np.testing.assert_allclose(shifted[m:-m, m:-m],
                                   np.roll(lr, (d[0] // s, d[1] // s), axis=(0, 1))[m:-m, m:-m], atol=1e-14)


def test_subpixel_misregistration_moves_a_ramp_by_the_shift():
    """On a linear ramp the PSF-weighted mean is the ramp at the PSF centre: i·s + (s−1)/2 − d
    (up to the 4σ truncation, whose window is not symmetric about a shifted centre: < 2e-4 px)."""
    s, H = 4, 64
    ramp = np.broadcast_to(np.arange(H, dtype=np.float64)[:, None, None], (H, 8, 1)).copy()
    for dy in (0.0, 0.25, -0.5, 1.75):
        lr = D.spatial_degrade(ramp, s, shift=(dy, 0.0))[:, 0, 0]
        i = np.arange(H // s)
        interior = slice(3, H // s - 3)
        np.testing.assert_allclose(lr[interior], (i * s + (s - 1) / 2 - dy)[interior], rtol=0, atol=2e-4)


# ------------------------------------------------------------------ SRF and noise

def test_apply_srf_equals_per_pixel_matmul():
    x = _cube(6, 5, 7, seed=2)
    srf = np.random.default_rng(1).random((3, 7))
    msi = D.apply_srf(x, srf)
    assert msi.shape == (6, 5, 3)
    for i in range(6):
        for j in range(5):
            np.testing.assert_allclose(msi[i, j], srf @ x[i, j], rtol=1e-13)
    assert D.apply_srf(x.astype(np.float32), srf).dtype == np.float32


@pytest.mark.parametrize("snr", [35.0, 10.0, 0.0])
def test_noise_at_requested_snr_numpy_and_torch(snr):
    x = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32) + 0.2
    y = D.add_noise(x, snr, np.random.default_rng(1))
    n = (y.astype(np.float64) - x)
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(n ** 2))
    assert measured == pytest.approx(snr, abs=0.05)
    assert abs(n.mean()) < 0.01 * n.std()
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, D.add_noise(x, snr, 1))            # int seed = Generator(seed)
    assert not np.array_equal(y, D.add_noise(x, snr, np.random.default_rng(2)))
    t = torch.from_numpy(x)
    ty = D.add_noise(t, snr, torch.Generator().manual_seed(0))
    tn = (ty - t).double()
    measured_t = 10 * torch.log10(t.double().pow(2).mean() / tn.pow(2).mean()).item()
    assert measured_t == pytest.approx(snr, abs=0.05)
    torch.testing.assert_close(ty, D.add_noise(t, snr, torch.Generator().manual_seed(0)), rtol=0, atol=0)


def test_noise_of_zero_signal_is_zero():
    z = np.zeros((4, 4, 2), np.float32)
    np.testing.assert_array_equal(D.add_noise(z, 30.0, 0), z)


# ------------------------------------------------------------------ the whole protocol

def test_degrade_pair_shapes_noise_and_determinism():
    x = _cube(32, 24, 10, seed=7, dtype=np.float32)
    srf = np.random.default_rng(0).random((4, 10))
    lr0, msi0 = D.simulate_pair(x, srf, 4)
    assert lr0.shape == (8, 6, 10) and msi0.shape == (32, 24, 4)
    assert lr0.dtype == msi0.dtype == np.float32
    np.testing.assert_allclose(lr0, D.spatial_degrade(x, 4), rtol=1e-6)
    np.testing.assert_allclose(msi0, D.apply_srf(x, srf), rtol=1e-6)
    lr1, msi1 = D.simulate_pair(x, srf, 4, snr_lr=30.0, snr_msi=40.0, rng=3)
    lr2, msi2 = D.simulate_pair(x, srf, 4, snr_lr=30.0, snr_msi=40.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(lr1, lr2)
    np.testing.assert_array_equal(msi1, msi2)
    assert not np.array_equal(lr1, lr0) and not np.array_equal(msi1, msi0)
    lr3, _ = D.simulate_pair(x, srf, 4, misregistration=(1.0, 0.0))
    assert not np.allclose(lr3, lr0)


def test_degrade_validation():
    x = _cube(16, 12, 3)
    srf = np.ones((2, 3)) / 3
    with pytest.raises(ValueError, match="multiples of scale=4"):
        D.simulate_pair(x[:15], srf, 4)
    with pytest.raises(ValueError, match="scale"):
        D.simulate_pair(x, srf, 0)
    with pytest.raises(ValueError, match=r"srf: expected an \(M, 3\)"):
        D.simulate_pair(x, np.ones((2, 4)), 4)
    with pytest.raises(ValueError, match="snr_lr"):
        D.simulate_pair(x, srf, 4, snr_lr=float("nan"))
    with pytest.raises(ValueError, match="snr_msi"):
        D.simulate_pair(x, srf, 4, snr_msi="35")
    with pytest.raises(ValueError, match="snr_db"):
        D.add_noise(x, True)
    with pytest.raises(ValueError, match="misregistration"):
        D.simulate_pair(x, srf, 4, misregistration=(0.5,))
    with pytest.raises(ValueError, match="misregistration"):
        D.simulate_pair(x, srf, 4, misregistration=(0.5, float("inf")))
    with pytest.raises(ValueError, match="sigma"):
        D.simulate_pair(x, srf, 4, sigma=0.0)
    with pytest.raises(ValueError, match="3-D"):
        D.simulate_pair(x[..., 0], srf, 4)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        D.simulate_pair(bad, srf, 4)
    with pytest.raises(ValueError, match="rng"):
        D.add_noise(x, 30.0, rng="seed")


def test_resolve_srf_matrix_and_sensor_name(monkeypatch):
    m = D.resolve_srf([[1.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    np.testing.assert_allclose(m.sum(1), 1.0)
    np.testing.assert_allclose(m[0], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(D.resolve_srf(torch.tensor([[2.0, 2.0]])), [[0.5, 0.5]])
    with pytest.raises(ValueError, match="non-negative"):
        D.resolve_srf([[1.0, -0.1]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        D.resolve_srf([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="M, L"):
        D.resolve_srf([1.0, 2.0])
    with pytest.raises(ValueError, match="wavelengths"):
        D.resolve_srf("sentinel2")

    calls = []

    def srf_matrix(sensor, wavelengths):
        calls.append((sensor, np.asarray(wavelengths)))
        if wavelengths.min() > 500:
            raise ValueError(f"{sensor}: band B2 outside the cube's range")
        return np.tile(np.ones(len(wavelengths)) / len(wavelengths), (2, 1))

    fake = types.ModuleType("csakd_fast.data.srf")
    fake.srf_matrix = srf_matrix
    monkeypatch.setitem(sys.modules, "csakd_fast.data.srf", fake)
    wl = np.linspace(400, 900, 6)
    m = D.resolve_srf("sentinel2", wl)
    assert m.shape == (2, 6) and calls[0][0] == "sentinel2"
    np.testing.assert_array_equal(calls[0][1], wl)
    with pytest.raises(ValueError, match="outside"):
        D.resolve_srf("sentinel2", wl + 500)
