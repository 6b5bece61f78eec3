"""Bad input raises ValueError naming the argument, the expected and the received value."""
import pytest
import torch

import csakd_fast as cf
from conftest import small


@pytest.fixture(scope="module")
def model():
    return cf.CSAKDNet(small("student"), backend="reference")


def test_model_inputs(model):
    lr, msi = torch.randn(2, 31, 8, 8), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"lr_hsi: expected a 4-D tensor, got shape \(31, 8, 8\)"):
        model(lr[0], msi)
    with pytest.raises(ValueError, match=r"lr_hsi: expected 31 bands .*got shape \(2, 30, 8, 8\)"):
        model(lr[:, :30], msi)
    with pytest.raises(ValueError, match=r"hr_msi: expected 3 bands"):
        model(lr, torch.randn(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"hr_msi: expected shape \(2, 3, 32, 32\).*got \(2, 3, 30, 32\)"):
        model(lr, msi[..., :30, :])
    with pytest.raises(ValueError, match=r"hr_msi: expected shape \(2, 3, 32, 32\)"):
        model(lr, msi[:1])
    with pytest.raises(ValueError, match="hr_msi: expected dtype torch.float32"):
        model(lr, msi.double())
    with pytest.raises(ValueError, match="lr_hsi: expected dtype torch.float32 .*parameters"):
        model(lr.double(), msi.double())
    with pytest.raises(ValueError, match="floating-point"):
        model(lr.long(), msi)
    bad = lr.clone(); bad[1, 3, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="lr_hsi: expected finite values, got 1 NaN/Inf"):
        model(bad, msi)
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        model(lr.numpy(), msi)


def test_layers():
    csa = cf.nn.CrossSelfAttention(8, attn_dim=8, heads=2)
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match="x3: expected 8 channels"):
        csa(x, x, torch.randn(1, 7, 4, 4), x)
    with pytest.raises(ValueError, match=r"x4: expected shape \(1, 8, 4, 4\)"):
        csa(x, x, x, torch.randn(1, 8, 4, 5))
    with pytest.raises(ValueError, match=r"x1: expected shape \(1, 8, 2, 2\)"):
        csa(x, x, x, x, up1=2)
    with pytest.raises(ValueError, match="attn_dim: expected a multiple of heads=3"):
        cf.nn.CrossSelfAttention(8, attn_dim=8, heads=3)
    with pytest.raises(ValueError, match="attention: expected one of"):
        cf.nn.CrossSelfAttention(8, attention="fast")
    with pytest.raises(ValueError, match="backend: expected one of"):
        cf.nn.CLRABlock(8, 4, backend="gpu")
    with pytest.raises(ValueError, match="groups: expected a divisor of nf=8 and gc=4, got 3"):
        cf.nn.CLRABlock(8, 4, groups=3)
    with pytest.raises(ValueError, match="x: expected 8 channels"):
        cf.nn.CLRABlock(8, 4)(torch.randn(1, 6, 4, 4))
    nan = x.clone()
    nan[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="x3: expected finite values, got 1 NaN/Inf"):
        csa(x, x, nan, x)
    with pytest.raises(ValueError, match="x: expected finite values"):
        cf.nn.CLRABlock(8, 4)(nan)
    with pytest.raises(ValueError, match="x1: expected dtype torch.float32"):
        csa(x.double(), x, x, x)
    with pytest.raises(ValueError, match="x: expected dtype torch.float32"):
        cf.nn.CLRABlock(8, 4)(x.double())


def test_model_layers_leave_the_finite_check_to_the_model():
    model = cf.CSAKDNet(small("teacher"))
    layers = [m for m in model.modules() if hasattr(m, "check_finite")]
    assert len(layers) == 21 and not any(m.check_finite for m in layers)   # 20 CLRA blocks + CSA


def test_loss_weights_and_metric_options():
    y = torch.rand(1, 4, 12, 12)
    for kw in ({"sam_weight": -0.1}, {"band_weight": "a"}, {"sam_weight": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            cf.losses.teacher_loss(y, y, **kw)
    with pytest.raises(ValueError, match="kd_weight"):
        cf.losses.student_loss(y, y, y, y, y, kd_weight=-1)
    for kw, name in (({"window": 10}, "window"), ({"window": 0}, "window"), ({"sigma": 0}, "sigma"),
                     ({"data_range": -1.0}, "data_range")):
        with pytest.raises(ValueError, match=name):
            cf.metrics.ssim(y, y, **kw)
    with pytest.raises(ValueError, match="scale: expected a positive number"):
        cf.metrics.ergas(y, y, scale=0)


def test_config():
    with pytest.raises(ValueError, match="fusion: expected one of"):
        small("teacher", fusion="add")
    with pytest.raises(ValueError, match="layers: expected 4 block counts"):
        small("teacher", layers=(1, 2, 3))
    with pytest.raises(ValueError, match="h_groups: expected a divisor of nf=16 and gc=8, got 3"):
        small("teacher", h_groups=3)
    with pytest.raises(ValueError, match="bands: expected an integer >= 1, got 0"):
        small("teacher", bands=0)
    with pytest.raises(ValueError, match="head_groups"):
        small("teacher", head_groups=2)       # 31 bands
    with pytest.raises(ValueError, match="unknown fields"):
        cf.CSAKDConfig.from_dict({"bands": 3, "msi_bands": 1, "width": 2})
    with pytest.raises(ValueError, match="config: expected a CSAKDConfig"):
        cf.CSAKDNet({"bands": 3})


def test_backend_resolution(monkeypatch):
    from csakd_fast import backends

    assert backends.resolve("csa", "reference", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="backend: 'cuda' cannot run 'csa' on cpu"):
        backends.resolve("csa", "cuda", torch.device("cpu"))
    monkeypatch.setenv("CSAKD_BACKEND", "reference")
    assert backends.resolve("clra", "auto", torch.device("cpu")) == "reference"
    monkeypatch.setenv("CSAKD_BACKEND", "bogus")
    with pytest.raises(ValueError, match="CSAKD_BACKEND: expected one of"):
        backends.resolve("clra", "auto", torch.device("cpu"))
