"""The three attention modes of CrossSelfAttention against independent float64 formulas."""
import math

import pytest
import torch

import csakd_fast as cf


def _probe(attention, C=16, heads=4, B=2, H=5, W=7):
    """An ungated layer whose output equals the attended map: output_conv = identity, x4 = 0."""
    layer = cf.nn.CrossSelfAttention(C, attn_dim=C, heads=heads, gate=False, attention=attention,
                                     backend="reference").double()
    with torch.no_grad():
        layer.output_conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
        layer.output_conv.bias.zero_()
        if attention == "normalized":
            layer.temperature.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0])[:heads])
    xs = [torch.randn(B, C, H, W, dtype=torch.float64) for _ in range(3)]
    return layer, xs, torch.zeros(B, C, H, W, dtype=torch.float64)


def _proj(conv, x):
    B, C, H, W = x.shape
    return torch.einsum("oc,bcn->bon", conv.weight.flatten(1), x.reshape(B, C, -1)) + conv.bias[:, None]


def test_legacy_is_per_head_sum_of_v():
    layer, (x1, x2, x3), x4 = _probe("legacy")
    out = layer(x1, x2, x3, x4)
    B, C, H, W = x1.shape
    v = _proj(layer.value_conv, x3).view(B, 4, C // 4, H * W)
    expected = v.sum(2, keepdim=True).expand_as(v).reshape(B, C, H, W)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_paper_is_softmax_qk_v():
    layer, (x1, x2, x3), x4 = _probe("paper")
    out = layer(x1, x2, x3, x4)
    B, C, H, W = x1.shape
    d = C // 4
    q = _proj(layer.query_conv, x1).view(B, 4, d, -1)
    k = _proj(layer.key_conv, x2).view(B, 4, d, -1)
    v = _proj(layer.value_conv, x3).view(B, 4, d, -1)
    expected = torch.empty_like(v)
    for b in range(B):
        for h in range(4):
            logits = q[b, h] @ k[b, h].T / math.sqrt(d)
            a = torch.exp(logits - logits.max(1, keepdim=True).values)
            a = a / a.sum(1, keepdim=True)
            expected[b, h] = a @ v[b, h]
    torch.testing.assert_close(out, expected.reshape(B, C, H, W), rtol=1e-10, atol=1e-10)
    # and the attention matters here, unlike in legacy mode
    legacy = layer.__class__(C, C, 4, gate=False, attention="legacy").double()
    legacy.load_state_dict(layer.state_dict())
    assert not torch.allclose(legacy(x1, x2, x3, x4), out)


@pytest.mark.parametrize("c", [0.01, 3.0, 250.0])
def test_normalized_is_scale_invariant(c):
    layer, (x1, x2, x3), x4 = _probe("normalized")
    torch.testing.assert_close(layer(c * x1, c * x2, x3, x4), layer(x1, x2, x3, x4),
                               rtol=1e-9, atol=1e-9)


def test_paper_is_not_scale_invariant():
    layer, (x1, x2, x3), x4 = _probe("paper")
    assert not torch.allclose(layer(3 * x1, 3 * x2, x3, x4), layer(x1, x2, x3, x4), atol=1e-6)


def test_normalized_matches_correlation_formula():
    layer, (x1, x2, x3), x4 = _probe("normalized")
    out = layer(x1, x2, x3, x4)
    B, C, H, W = x1.shape
    d = C // 4
    q = _proj(layer.query_conv, x1).view(B, 4, d, -1)
    k = _proj(layer.key_conv, x2).view(B, 4, d, -1)
    v = _proj(layer.value_conv, x3).view(B, 4, d, -1)
    tau = layer.temperature.detach()
    for b in range(B):
        for h in range(4):
            qc = q[b, h] - q[b, h].mean(1, keepdim=True)
            kc = k[b, h] - k[b, h].mean(1, keepdim=True)
            corr = (qc @ kc.T) / (qc.norm(dim=1)[:, None] * kc.norm(dim=1)[None, :])
            a = torch.softmax(tau[h] * corr, dim=1)
            got = out.reshape(B, 4, d, -1)[b, h]
            torch.testing.assert_close(got, a @ v[b, h], rtol=1e-10, atol=1e-10)


def test_gate_combines_inputs():
    C = 6
    layer = cf.nn.CrossSelfAttention(C, attn_dim=8, heads=2, gate=True, backend="reference").double()
    xs = [torch.randn(1, C, 4, 4, dtype=torch.float64) for _ in range(4)]
    ungated = cf.nn.CrossSelfAttention(C, attn_dim=8, heads=2, gate=False, backend="reference").double()
    ungated.load_state_dict({k: v for k, v in layer.state_dict().items()
                             if not k.startswith("attention_weights")})
    att = ungated(*xs)
    cat = torch.cat([xs[0], xs[1], xs[2], att], 1)
    g = torch.sigmoid(torch.einsum("oc,bchw->bohw", layer.attention_weights.weight.flatten(1), cat)
                      + layer.attention_weights.bias.view(1, 4, 1, 1))
    expected = sum(g[:, i:i + 1] * t for i, t in enumerate([xs[0], xs[1], xs[2], att]))
    torch.testing.assert_close(layer(*xs), expected)


def test_low_resolution_inputs_equal_upsampled():
    layer = cf.nn.CrossSelfAttention(8, attn_dim=8, heads=2, backend="reference")
    x1, x3 = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    x2, x4 = torch.randn(2, 8, 12, 20), torch.randn(2, 8, 12, 20)
    up = lambda t: t.repeat_interleave(4, 2).repeat_interleave(4, 3)  # noqa: E731
    torch.testing.assert_close(layer(x1, x2, x3, x4, up1=4, up3=4), layer(up(x1), x2, up(x3), x4))


def test_legacy_model_ignores_query_and_key():
    from conftest import small

    model = cf.CSAKDNet(small("student", attention="legacy"), backend="reference")
    lr, msi = torch.randn(1, 31, 8, 8), torch.randn(1, 3, 32, 32)
    before = model(lr, msi)[0]
    with torch.no_grad():
        model.decoder.fuse_att.query_conv.weight.mul_(-3)
        model.decoder.fuse_att.key_conv.bias.add_(1)
    torch.testing.assert_close(model(lr, msi)[0], before)
