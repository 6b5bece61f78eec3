"""CSAKDNet: every preset × fusion × attention runs forward and backward; layout and counts."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

import csakd_fast as cf
from conftest import small

PRESETS = ("teacher", "student", "teacher_large")
CASES = [(f, a) for f in ("sum", "sigmoid", "concat") for a in ("paper",)] + \
        [(f, a) for f in ("mhca", "csa") for a in ("paper", "legacy", "normalized")]


def _inputs(cfg, batch, hr=32, dtype=torch.float32):
    lr = torch.randn(batch, cfg.bands, hr // cfg.scale, hr // cfg.scale, dtype=dtype)
    msi = torch.randn(batch, cfg.msi_bands, hr, hr, dtype=dtype)
    return lr, msi


def _dead(cfg, name):
    """Parameters used in forward whose gradient is zero by construction (documented)."""
    if cfg.attention == "legacy" and cfg.fusion in ("mhca", "csa"):
        # the public apply step sums keys and values apart: A has no effect (docs/design.md, "The network")
        return name.startswith(("decoder.fuse_att.query_conv", "decoder.fuse_att.key_conv"))
    if cfg.attention == "normalized" and cfg.fusion in ("mhca", "csa"):
        # centring each token over the pixels cancels the q/k biases
        return name in ("decoder.fuse_att.query_conv.bias", "decoder.fuse_att.key_conv.bias")
    return False


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("fusion,attention", CASES)
@pytest.mark.parametrize("batch", [1, 2])
def test_forward_backward(preset, fusion, attention, batch):
    cfg = small(preset, fusion=fusion, attention=attention)
    model = cf.CSAKDNet(cfg, backend="reference")
    lr, msi = _inputs(cfg, batch)
    out, fused = model(lr, msi)
    assert out.shape == (batch, 31, 32, 32)
    assert fused.shape == (batch, 16, 32, 32)
    (out.square().mean() + fused.square().mean()).backward()
    unused = model.unused_parameter_prefixes()
    live = max(p.grad.abs().max().item() for n, p in model.named_parameters()
               if p.grad is not None and not _dead(cfg, n))
    for name, p in model.named_parameters():
        if name.startswith(unused):
            assert p.grad is None, f"{name} is documented unused but got a gradient"
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        scale = p.grad.abs().max().item()
        if _dead(cfg, name):
            # rounding noise only: softmax rows sum to 1 up to an ulp
            assert scale < 1e-4 * live, f"{name} should have a vanishing gradient, got {scale}"
        else:
            assert scale > 0, f"{name} got an all-zero gradient"


def test_student_skips_hm_blocks_teacher_uses_them():
    torch.manual_seed(1)
    for preset, used in (("student", False), ("teacher", True)):
        model = cf.CSAKDNet(small(preset), backend="reference")
        lr, msi = _inputs(model.config, 1)
        before = model(lr, msi)[0]
        with torch.no_grad():
            for p in model.decoder.hmfeat.parameters():
                p.add_(torch.randn_like(p))
        after = model(lr, msi)[0]
        assert (not torch.equal(before, after)) == used


# --- public layout ---------------------------------------------------------------------------
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
# Facts of official_state_dict_{teacher,student}.json (paper config: bands=172, msi_bands=4,
# nf=86, gc=43, csa): key count, parameter count, and the sha256 of the sorted "key:shape" lines.
MANIFEST = {
    "teacher": (621, 26_807_686, "f34564dc765fd60d6c31eac8fac83812d44be826ddc3ee6bbbe54da69186ccdf"),
    "student": (321, 8_748_718, "1ea4644606b48f7f846c3cfa7f3a71c0c5441e936f46a7a3fd60f444df5a34b4"),
}


def _digest(shapes):
    lines = "\n".join(f"{k}:{','.join(map(str, s))}" for k, s in sorted(shapes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _paper(preset):
    return cf.CSAKDNet(getattr(cf.CSAKDConfig, preset)(bands=172, msi_bands=4), backend="reference")


@pytest.mark.parametrize("preset", ["teacher", "student"])
def test_state_dict_layout_facts(preset):
    shapes = {k: list(v.shape) for k, v in _paper(preset).state_dict().items()}
    n_keys, n_params, digest = MANIFEST[preset]
    assert len(shapes) == n_keys
    assert sum(torch.Size(s).numel() for s in shapes.values()) == n_params
    assert _digest(shapes) == digest


@pytest.mark.parametrize("preset", ["teacher", "student"])
def test_state_dict_layout_against_manifest(preset):
    path = SHARED / f"official_state_dict_{preset}.json"
    if not path.is_file():
        pytest.skip(f"{path} not present (the facts test above covers the layout)")
    ref = json.loads(path.read_text())
    shapes = {k: list(v.shape) for k, v in _paper(preset).state_dict().items()}
    assert shapes == ref
    assert _digest(ref) == MANIFEST[preset][2]


def test_parameter_counts():
    teacher, student = _paper("teacher"), _paper("student")
    assert teacher.num_parameters() == 26_807_686          # paper: 26.8 M
    assert round(teacher.num_parameters() / 1e6, 2) == 26.81
    assert student.num_parameters() == 7_449_946           # used in forward; paper: 7.44 M
    assert round(student.num_parameters() / 1e6, 2) == 7.45
    assert student.num_parameters(used_only=False) == 8_748_718
    large = cf.CSAKDNet(cf.CSAKDConfig.teacher_large(bands=172, msi_bands=4), backend="reference")
    assert large.num_parameters() > teacher.num_parameters()


def test_init_follows_design():
    model = cf.CSAKDNet(small("teacher"), backend="reference")
    conv = model.decoder.hfeat[0].MFB2.conv3
    assert torch.all(conv.bias == 0)
    fan_in = conv.weight[0].numel()
    std = conv.weight.std().item()
    assert 0.05 < std / (0.1 * (2 / fan_in) ** 0.5) < 1.5


def test_presets_and_overrides():
    s = cf.CSAKDConfig.student(bands=31, msi_bands=3, nf=16, gc=8)
    assert s.layers == (1, 4, 4, 1) and s.h_groups == 8 and not s.use_hm_blocks
    assert cf.CSAKDConfig.student(bands=172, msi_bands=4).h_groups == 43
    assert cf.CSAKDConfig.teacher_large(bands=5, msi_bands=2).layers == (8, 8, 6, 6)
    t = cf.CSAKDConfig.teacher(bands=31, msi_bands=3, fusion="mhca")
    assert t.fusion == "mhca" and t.layers == (6, 6, 4, 4)
    assert cf.CSAKDConfig.from_dict(t.to_dict()) == t


def test_float64_model():
    cfg = small("student")
    model = cf.CSAKDNet(cfg, backend="reference").double()
    lr, msi = _inputs(cfg, 2, dtype=torch.float64)
    out, fused = model(lr, msi)
    assert out.dtype == torch.float64 and fused.dtype == torch.float64


def test_residual_adds_the_bilinear_upsampled_lr_hsi():
    """``residual`` (not in the paper) is parameter-free: same state dict, output + bilinear(lr)."""
    torch.manual_seed(0)
    plain = cf.CSAKDNet(small("student"))
    skip = cf.CSAKDNet(small("student", residual=True))
    assert plain.state_dict().keys() == skip.state_dict().keys()
    skip.load_state_dict(plain.state_dict())
    lr, msi = _inputs(plain.config, 2)
    (a, fa), (b, fb) = plain(lr, msi), skip(lr, msi)
    up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(b, a + up)
    torch.testing.assert_close(fb, fa)
    with pytest.raises(ValueError, match="residual: expected a bool"):
        small("student", residual=1)
