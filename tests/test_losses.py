"""Known values of every loss term and of the two compositions."""
import math

import pytest
import torch

from csakd_fast import losses as Lo


def test_smooth_l1():
    y = torch.zeros(1, 2, 2, 2)
    assert Lo.smooth_l1_loss(y + 0.5, y).item() == pytest.approx(0.125)
    assert Lo.smooth_l1_loss(y + 2.0, y).item() == pytest.approx(1.5)


def test_sam_loss():
    y = torch.rand(2, 4, 3, 3) + 0.1
    assert Lo.sam_loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    a = torch.zeros(1, 2, 1, 1); a[0, 0] = 1
    b = torch.zeros(1, 2, 1, 1); b[0, 1] = 1
    assert Lo.sam_loss(a, b).item() == pytest.approx(1.0)
    c = torch.ones(1, 2, 1, 1)
    assert Lo.sam_loss(a, c).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)


def test_band_wise_loss():
    y = torch.zeros(1, 3, 4, 4)
    # smoothL1(0.5) = 0.125 per pixel; energy mean(0 + 0.1) = 0.1
    assert Lo.band_wise_loss(y + 0.5, y).item() == pytest.approx(1.25, rel=1e-6)
    y2 = torch.ones(1, 1, 2, 2)
    # energy 1.1, smoothL1(2) = 1.5
    assert Lo.band_wise_loss(y2 + 2, y2).item() == pytest.approx(1.5 / 1.1, rel=1e-6)


def test_band_wise_balances_bands():
    y = torch.ones(1, 2, 4, 4); y[:, 1] *= 10           # a strong and a weak band
    e = torch.zeros_like(y); e[:, 0] = 0.1              # same error on the weak band only ...
    weak = Lo.band_wise_loss(y + e, y).item()
    e2 = torch.zeros_like(y); e2[:, 1] = 0.1            # ... or on the strong band
    strong = Lo.band_wise_loss(y + e2, y).item()
    assert weak > 50 * strong


def test_kd_and_feature_terms():
    s = torch.zeros(1, 2, 3, 3, requires_grad=True)
    t = torch.full((1, 2, 3, 3), 0.5, requires_grad=True)
    assert Lo.kd_response_loss(s, t).item() == pytest.approx(0.125)
    assert Lo.feature_bce_loss(s, torch.zeros(1, 2, 3, 3)).item() == pytest.approx(math.log(2), rel=1e-6)
    (Lo.kd_response_loss(s, t) + Lo.feature_bce_loss(s, t)).backward()
    assert t.grad is None and s.grad is not None   # the teacher side is detached


def test_teacher_loss_composition_and_weights():
    torch.manual_seed(0)
    p, y = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5)
    total, terms = Lo.teacher_loss(p, y)
    expected = terms["l1"] + 0.1 * terms["sam"] + 0.1 * terms["band"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"l1", "sam", "band", "total"}
    total2, _ = Lo.teacher_loss(p, y, sam_weight=0.0, band_weight=1.0)
    assert total2.item() == pytest.approx((terms["l1"] + terms["band"]).item(), rel=1e-6)


def test_student_loss_composition():
    torch.manual_seed(0)
    p = torch.rand(2, 4, 5, 5, requires_grad=True)
    y, tp = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5, requires_grad=True)
    f, tf = torch.randn(2, 3, 5, 5, requires_grad=True), torch.randn(2, 3, 5, 5, requires_grad=True)
    total, t = Lo.student_loss(p, y, tp, f, tf)
    expected = t["l1"] + 0.1 * (t["kd"] + t["feat"] + t["band"] + t["sam"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert tp.grad is None and tf.grad is None and p.grad is not None and f.grad is not None
    total_w, _ = Lo.student_loss(p, y, tp, f, tf, kd_weight=1.0, feat_weight=0.0, band_weight=0.0, sam_weight=0.0)
    assert total_w.item() == pytest.approx((t["l1"] + t["kd"]).item(), rel=1e-6)


def test_bad_input():
    y = torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match="pred"):
        Lo.sam_loss(torch.rand(1, 3, 3, 3), y)
    with pytest.raises(ValueError, match="finite"):
        Lo.teacher_loss(y * float("nan"), y)
    with pytest.raises(ValueError, match="teacher_fused"):
        Lo.student_loss(y, y, y, y, torch.rand(1, 5, 3, 3))
