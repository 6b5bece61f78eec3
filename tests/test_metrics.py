"""Known values of every metric: identical images and small hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from csakd_fast import metrics as M


def _img(B=2, L=5, H=16, W=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, L, H, W, generator=g, dtype=torch.float64) * 0.8 + 0.1


def test_identical_images():
    y = _img()
    assert torch.all(torch.isinf(M.psnr(y, y)) & (M.psnr(y, y) > 0))
    assert torch.all(M.sam(y, y) == 0)
    assert torch.all(M.ergas(y, y) == 0)
    assert torch.all(M.rmse(y, y) == 0)
    torch.testing.assert_close(M.ssim(y, y), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(M.cc(y, y), torch.ones(2, dtype=torch.float64))
    y32 = y.float()
    assert torch.all(M.sam(y32, 3 * y32) < 1e-5)  # proportional spectra: angle ~0, not NaN


def test_psnr_hand_computed():
    y = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    y[0, 0, 0, 0], y[0, 1, 0, 0] = 1.0, 0.5           # band peaks 1.0 and 0.5
    x = y + 0.1                                       # MSE 0.01 in both bands
    expected = (10 * math.log10(1 / 0.01) + 10 * math.log10(0.25 / 0.01)) / 2
    assert M.psnr(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_sam_hand_computed():
    y = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    x = torch.zeros_like(y)
    y[0, :, 0, 0], x[0, :, 0, 0] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])   # 90°
    y[0, :, 0, 1], x[0, :, 0, 1] = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])   # 45°
    y[0, :, 0, 2] = torch.tensor([1.0, 1.0])                                             # zero pred: excluded
    assert M.sam(x, y).item() == pytest.approx(67.5, rel=1e-12)
    assert M.sam(torch.zeros_like(y), y).item() == 0.0  # nothing valid: 0, not NaN


def test_sam_matches_arccos_away_from_zero():
    x, y = _img(seed=1), _img(seed=2)
    xf, yf = x.flatten(2), y.flatten(2)
    cos = (xf * yf).sum(1) / (xf.norm(dim=1) * yf.norm(dim=1))
    expected = torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean(-1)
    torch.testing.assert_close(M.sam(x, y), expected, rtol=1e-10, atol=1e-10)


def test_rmse_and_ergas_hand_computed():
    y = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    x = y + 0.1
    assert M.rmse(x, y).item() == pytest.approx(0.1, rel=1e-12)
    # (100/4) * sqrt(0.01 / 0.25) = 5
    assert M.ergas(x, y, scale=4).item() == pytest.approx(5.0, rel=1e-12)
    assert M.ergas(x, y, scale=8).item() == pytest.approx(2.5, rel=1e-12)


def test_ssim_hand_computed_constant_images():
    a, b = 0.3, 0.6
    x = torch.full((1, 2, 12, 12), a, dtype=torch.float64)
    y = torch.full((1, 2, 12, 12), b, dtype=torch.float64)
    c1 = 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)   # σ = 0: the contrast term is 1
    assert M.ssim(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_ssim_against_direct_window_sum():
    x, y = _img(B=1, L=1, H=12, W=11, seed=3), _img(B=1, L=1, H=12, W=11, seed=4)
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2)); g /= g.sum(); w = np.outer(g, g)
    xs, ys = x[0, 0].numpy(), y[0, 0].numpy()
    vals = []
    for i in range(12 - 10):
        for j in range(11 - 10):
            px, py = xs[i:i + 11, j:j + 11], ys[i:i + 11, j:j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - mx ** 2
            vy = (w * py * py).sum() - my ** 2
            cxy = (w * px * py).sum() - mx * my
            c1, c2 = 1e-4, 9e-4
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    assert M.ssim(x, y).item() == pytest.approx(float(np.mean(vals)), rel=1e-10)


def test_cc_hand_computed():
    x = _img(B=1, L=3)
    assert M.cc(2 * x + 1, x).item() == pytest.approx(1.0, rel=1e-12)
    assert M.cc(-x, x).item() == pytest.approx(-1.0, rel=1e-12)
    per = M.cc(torch.cat([x[:, :2], -x[:, 2:]], 1), x, per_band=True)
    torch.testing.assert_close(per, torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64))
    const = x.clone(); const[:, 0] = 0.5                   # a constant band: left out
    assert M.cc(const, x).item() == pytest.approx(1.0, rel=1e-12)


def test_float32_inputs_accumulate_in_float64():
    y = _img().float()
    out = M.psnr(y + 0.01, y)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, M.psnr(y.double() + 0.01, y.double()), rtol=1e-5, atol=0)


@pytest.mark.parametrize("fn", [M.psnr, M.sam, M.rmse, M.ergas, M.ssim, M.cc])
def test_bad_input(fn):
    y = _img()
    with pytest.raises(ValueError, match="pred"):
        fn(y[:, :3], y)
    with pytest.raises(ValueError, match="4-D"):
        fn(y[0], y[0])
    with pytest.raises(ValueError, match="dtype"):
        fn(y.float(), y)
    bad = y.clone(); bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        fn(bad, y)


def test_sam_map_is_the_per_pixel_angle_that_sam_averages():
    torch.manual_seed(1)
    x, y = torch.rand(2, 5, 6, 7), torch.rand(2, 5, 6, 7)
    y[1, :, 0, 0] = 0                                     # an excluded (zero-norm) pixel
    m = M.sam_map(x, y)
    assert m.shape == (2, 6, 7) and m.dtype == torch.float64 and m[1, 0, 0] == 0
    torch.testing.assert_close(m[0].mean(), M.sam(x, y)[0])
    torch.testing.assert_close(m[1].sum() / 41, M.sam(x, y)[1])
