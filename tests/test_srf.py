"""Sensor spectral response functions: the real tables, their resampling, and the refusals."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import requires
from csakd_fast.data import srf

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

REFERENCE_GRID = np.concatenate([np.arange(400, 1331, 10), np.arange(1480, 1771, 10),
                                 np.arange(1980, 2451, 10)]).astype(float)


def _fine(wl, r, step=0.01):
    """The table linearly interpolated on a fine grid, negatives clipped."""
    t = np.arange(wl[0], wl[-1] + step / 2, step)
    return t, np.clip(np.interp(t, wl, r), 0, None)


def _centroid(wl, r):
    t, rf = _fine(wl, r)
    return trapezoid(rf * t, t) / trapezoid(rf, t)


def _fwhm(wl, r):
    """(centre, width) of the full width at half maximum, edges by linear interpolation."""
    t, rf = _fine(wl, r)
    above = t[rf >= rf.max() / 2]
    return (above[0] + above[-1]) / 2, above[-1] - above[0]


@requires("pyrsr", "colour")
def test_sensors_and_band_names():
    assert {"sentinel2", "landsat8", "nikon_d5100"} <= set(srf.SENSORS)
    assert srf.band_names("sentinel2") == ["B2", "B3", "B4", "B8"]
    assert srf.band_names("landsat8") == ["B2", "B3", "B4", "B5", "B6", "B7"]
    assert srf.band_names("nikon_d5100") == ["R", "G", "B"]
    for s in srf.SENSORS:
        assert set(srf.response(s)) == set(srf.band_names(s))
        assert s in srf.SOURCES


@requires("pyrsr", "colour")
@pytest.mark.parametrize("sensor", srf.SENSORS)
@pytest.mark.parametrize("grid", ["reference", "1nm", "irregular"])
def test_rows_sum_to_one(sensor, grid):
    wl = {"reference": REFERENCE_GRID, "1nm": np.arange(380.0, 2500.0, 1.0),
          "irregular": np.sort(np.random.default_rng(0).uniform(395, 2460, 157))}[grid]
    S = srf.srf_matrix(sensor, wl)
    assert S.shape == (len(srf.band_names(sensor)), wl.size) and S.dtype == np.float64
    np.testing.assert_allclose(S.sum(1), 1.0, rtol=0, atol=1e-12)
    assert (S >= 0).all()
    # every row is concentrated where its table responds
    for row, (lo, hi) in zip(S, srf.band_support(sensor).values()):
        nz = wl[row > 0]
        assert nz[0] >= wl[max(np.searchsorted(wl, lo) - 1, 0)] and nz[-1] <= wl[np.searchsorted(wl, hi)]


@requires("pyrsr", "colour")
def test_camera_on_a_cave_grid():
    """The RGB camera fits the 400–700 nm, 31-band grid of CAVE/Harvard."""
    S = srf.srf_matrix("nikon_d5100", np.arange(400.0, 701.0, 10.0))
    assert S.shape == (3, 31)
    np.testing.assert_allclose(S.sum(1), 1.0, atol=1e-12)
    wl = np.arange(400.0, 701.0, 10.0)
    assert wl[S[0].argmax()] > wl[S[1].argmax()] > wl[S[2].argmax()]  # R, G, B


# --- the tables are the published ones ---------------------------------------------------------

# ESA, Sentinel-2 MSI central wavelengths (nm) of S2-SRF v3.0 (COPE-GSEG-EOPG-TN-15-0007): the
# response-weighted centroids.
S2_CENTRAL = {"sentinel2": [492.4, 559.8, 664.6, 832.8], "sentinel2b": [492.1, 559.0, 664.9, 832.9]}
# Barsi et al. 2014, "The Spectral Response of the Landsat-8 Operational Land Imager", Remote
# Sensing 6, 10232: band centre and FWHM (nm) of the band-average RSR, B2–B7.
L8_BARSI = [(482.04, 60.04), (561.41, 57.33), (654.59, 37.47), (864.67, 28.25),
            (1608.86, 84.72), (2200.73, 186.66)]


@requires("pyrsr", "colour")
@pytest.mark.parametrize("sensor", ["sentinel2", "sentinel2b"])
def test_sentinel2_central_wavelengths(sensor):
    got = [_centroid(*t) for t in srf.response(sensor).values()]
    np.testing.assert_allclose(got, S2_CENTRAL[sensor], atol=0.1)
    # B8 is the broad 10 m NIR band (≈ 106 nm), not the narrow B8A (≈ 21 nm)
    assert 100 < _fwhm(*srf.response(sensor)["B8"])[1] < 110


@requires("pyrsr", "colour")
def test_landsat8_centres_and_fwhm():
    for (name, t), (centre, width) in zip(srf.response("landsat8").items(), L8_BARSI):
        c, w = _fwhm(*t)
        assert abs(c - centre) < 0.2, (name, c, centre)
        assert abs(w - width) < 0.2, (name, w, width)


@requires("pyrsr", "colour")
def test_landsat9_centres():
    # NASA's Landsat-9 OLI-2 RSR files are named by band centre: 482, 561, 654, 865, 1608, 2200 nm
    got = [_fwhm(*t)[0] for t in srf.response("landsat9").values()]
    np.testing.assert_allclose(got, [482, 561, 654, 865, 1608, 2200], atol=1.0)


@requires("pyrsr", "colour")
def test_nikon_table_spot_values():
    """Values of colour-science's NPL table (Darrodi et al. 2015), peak-normalised."""
    r = srf.response("nikon_d5100")
    wl, red = r["R"]
    assert wl[0] == 380 and wl[-1] == 780 and np.all(np.diff(wl) == 5)
    assert red[0] == pytest.approx(0.00156384299336578, rel=1e-12)
    assert r["G"][1][0] == pytest.approx(0.000115, rel=1e-12)
    peaks = {b: wl[v.argmax()] for b, (wl, v) in r.items()}
    assert peaks == {"R": 595.0, "G": 530.0, "B": 460.0}
    assert all(v.max() == pytest.approx(1.0) for _, v in r.values())


@requires("pyrsr", "colour")
def test_camera_import_keeps_numpy_printoptions():
    """colour-science sets numpy's legacy printing on import; srf undoes it (fresh process, as the
    import happens once)."""
    # srf.py imports only numpy: load it alone, without torch (csakd_fast/__init__), to keep it fast
    code = ("import importlib.util as u, sys, numpy as np; "
            "spec = u.spec_from_file_location('srf', sys.argv[1]); srf = u.module_from_spec(spec); "
            "spec.loader.exec_module(srf); before = np.get_printoptions(); "
            "srf.srf_matrix('nikon_d5100', np.arange(400.0, 701.0, 10.0)); "
            "import colour; assert np.get_printoptions() == before, np.get_printoptions()")
    path = Path(srf.__file__).resolve()
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


@requires("pyrsr", "colour")
def test_tables_are_read_only_copies():
    a = srf.response("sentinel2")["B2"][1]
    a[:] = 0
    assert srf.response("sentinel2")["B2"][1].max() > 0


# --- the integration ---------------------------------------------------------------------------

@requires("pyrsr", "colour")
@pytest.mark.parametrize("sensor", ["sentinel2", "landsat8", "nikon_d5100"])
def test_exact_for_linear_spectra(sensor):
    """Hat functions reproduce a spectrum linear in λ, so S(α + βλ) = α + β·centroid."""
    S = srf.srf_matrix(sensor, REFERENCE_GRID)
    got = S @ (0.3 + 1e-4 * REFERENCE_GRID)
    want = []
    for (wl, r), (lo, hi) in zip(srf.response(sensor).values(), srf.band_support(sensor).values()):
        t = np.linspace(lo, hi, 200001)
        rf = np.interp(t, wl, np.clip(r, 0, None))
        want.append(0.3 + 1e-4 * trapezoid(rf * t, t) / trapezoid(rf, t))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@requires("pyrsr", "colour")
def test_hat_weights_on_the_tables_own_grid():
    """On the table's 1 nm grid, ∫ r φ_l = (r_{l-1} + 4 r_l + r_{l+1}) / 6 at interior nodes."""
    wl = np.arange(400.0, 1000.0, 1.0)
    S = srf.srf_matrix("sentinel2", wl)
    for row, (tw, tr), (lo, hi) in zip(S, srf.response("sentinel2").values(),
                                       srf.band_support("sentinel2").values()):
        r = np.interp(wl, tw, np.clip(tr, 0, None))
        inner = (wl > lo) & (wl < hi)
        simpson = (np.roll(r, 1) + 4 * r + np.roll(r, -1)) / 6
        ratio = row[inner] / simpson[inner]
        np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-9)
        assert (row[(wl < lo) | (wl > hi)] == 0).all()


@requires("pyrsr", "colour")
def test_narrow_band_between_coarse_samples():
    """A 30 nm band on a 50 nm grid still gets a response (point sampling could miss it)."""
    S = srf.srf_matrix("sentinel2", np.arange(350.0, 1001.0, 50.0))
    np.testing.assert_allclose(S.sum(1), 1.0, atol=1e-12)
    assert (S[2] > 0).sum() >= 2


# --- refusals ----------------------------------------------------------------------------------

@requires("pyrsr", "colour")
def test_refuses_band_outside_the_cube():
    with pytest.raises(ValueError, match=r"sentinel2 band B8 .*775–906 nm.*400–800 nm.*refused"):
        srf.srf_matrix("sentinel2", np.arange(400.0, 801.0, 10.0))
    with pytest.raises(ValueError, match="landsat8 band B7"):
        srf.srf_matrix("landsat8", np.arange(400.0, 2301.0, 10.0))
    with pytest.raises(ValueError, match="nikon_d5100 band R .*415–685 nm"):
        srf.srf_matrix("nikon_d5100", np.arange(420.0, 701.0, 10.0))


@requires("pyrsr", "colour")
def test_refuses_band_in_a_gap_of_the_grid():
    wl = np.r_[np.arange(400.0, 1501.0, 10.0), 1700.0, np.arange(2000.0, 2451.0, 10.0)]
    with pytest.raises(ValueError, match="landsat8 band B6 .*between the cube's bands at 1500 and 1700"):
        srf.srf_matrix("landsat8", wl)


@requires("pyrsr", "colour")
def test_micrometre_hint():
    with pytest.raises(ValueError, match="micrometres"):
        srf.srf_matrix("sentinel2", np.arange(0.4, 2.5, 0.01))


@pytest.mark.parametrize("wl, match", [
    (np.array([[400.0, 500.0]]), "1-D"),
    (np.array([500.0]), "at least 2"),
    (np.array([400.0, np.nan, 600.0]), "finite"),
    (np.array([400.0, 600.0, 500.0]), "strictly increasing"),
    ("abc", "wavelengths_nm"),
])
def test_bad_wavelengths(wl, match):
    with pytest.raises(ValueError, match=match):
        srf.srf_matrix("sentinel2", wl)


def test_bad_sensor_and_threshold():
    with pytest.raises(ValueError, match="sensor: expected one of .*'sentinel2'.*got 'modis'"):
        srf.srf_matrix("modis", REFERENCE_GRID)
    with pytest.raises(ValueError, match="sensor"):
        srf.band_names("Sentinel-2")
    with pytest.raises(ValueError, match="threshold"):
        srf.srf_matrix("sentinel2", REFERENCE_GRID, threshold=0)


@requires("pyrsr", "colour")
def test_threshold_changes_the_support():
    wide = srf.band_support("sentinel2", threshold=0.001)["B2"]
    narrow = srf.band_support("sentinel2", threshold=0.5)["B2"]
    default = srf.band_support("sentinel2")["B2"]
    assert wide[0] <= default[0] < narrow[0] and narrow[1] < default[1] <= wide[1]
