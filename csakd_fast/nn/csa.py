"""CrossSelfAttention: the CSA fusion module (gate=True) and its ungated MHCA form."""
from __future__ import annotations

import torch
from torch import nn

from .. import _checks, backends
from ..ops.csa import ATTENTIONS, CSAWeights, cross_self_attention


class CrossSelfAttention(nn.Module):
    """Fuse four (B, C, H, W) maps by spectral-token cross attention (docs/design.md, "The
    network" and "The fused CSA"; the op is :mod:`csakd_fast.ops.csa`).

    q, k, v are 1x1 projections (C -> attn_dim) of x1, x2, x3; per head the attention runs over
    spectral tokens (channels) with the pixels contracted; att = output_conv(attended) + x4.
    With ``gate`` (the paper's CSA) out = Σ σ(g)_i · [x1, x2, x3, att]_i, with
    g = attention_weights([x1; x2; x3; att]); without, out = att (the public MHCA fusion).

    ``forward(x1, x2, x3, x4, up1=1, up3=1)``: x1 and x3 may be given at a resolution ``up1`` /
    ``up3`` times lower; they are used as if nearest-upsampled (the fused backends read them at
    p // up instead of materialising the upsampled maps).

    Inputs are checked for NaN/Inf (a host sync per call); ``CSAKDNet`` turns that off for its own
    layers (``check_finite = False``), whose inputs come from its already-checked inputs.

    Submodule names are those of the public checkpoints (``query_conv`` … ``attention_weights``);
    ``attention="normalized"`` adds a per-head ``temperature`` (initialised to 1, as in XCiT).
    """

    def __init__(self, channels: int, attn_dim: int = 64, heads: int = 4, gate: bool = True,
                 attention: str = "paper", backend: str = "auto"):
        super().__init__()
        _checks.positive_int("channels", channels)
        _checks.positive_int("attn_dim", attn_dim)
        _checks.positive_int("heads", heads)
        if attn_dim % heads:
            raise ValueError(f"attn_dim: expected a multiple of heads={heads}, got {attn_dim}")
        _checks.choice("attention", attention, ATTENTIONS)
        backends.check("csa", backend)
        self.channels, self.attn_dim, self.heads = channels, attn_dim, heads
        self.gate, self.attention, self.backend = bool(gate), attention, backend
        self.check_finite = True
        self.query_conv = nn.Conv2d(channels, attn_dim, 1)
        self.key_conv = nn.Conv2d(channels, attn_dim, 1)
        self.value_conv = nn.Conv2d(channels, attn_dim, 1)
        self.output_conv = nn.Conv2d(attn_dim, channels, 1)
        if self.gate:
            self.attention_weights = nn.Conv2d(4 * channels, 4, 1)
        if attention == "normalized":
            self.temperature = nn.Parameter(torch.ones(heads))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, attn_dim={self.attn_dim}, heads={self.heads}, "
                f"gate={self.gate}, attention={self.attention!r}, backend={self.backend!r}")

    def _check(self, x1, x2, x3, x4, up1, up3):
        names = ("x1", "x2", "x3", "x4")
        for n, x in zip(names, (x1, x2, x3, x4)):
            _checks.tensor(n, x, 4)
            _checks.channels(n, x, self.channels)
        _checks.same_device_dtype(("x2", "x1", "x3", "x4"), (x2, x1, x3, x4))
        _checks.like_parameters("x2", x2, self)
        _checks.same_shape(("x2", "x4"), (x2, x4))
        if self.check_finite:
            for n, x in zip(names, (x1, x2, x3, x4)):
                _checks.finite(n, x)
        B, C, H, W = x2.shape
        for n, x, up in (("x1", x1, up1), ("x3", x3, up3)):
            _checks.positive_int(f"up{n[1]}", up)
            want = (B, C, H // up, W // up)
            if H % up or W % up or tuple(x.shape) != want:
                raise ValueError(f"{n}: expected shape {want} (x2's shape with H, W divided by "
                                 f"up{n[1]}={up}), got {tuple(x.shape)}")

    def weights(self) -> CSAWeights:
        """The parameters as the op takes them (1x1 conv weights as matrices)."""
        flat = lambda conv: conv.weight.flatten(1)  # noqa: E731  (Cout, Cin, 1, 1) -> (Cout, Cin)
        q, k, v, o = self.query_conv, self.key_conv, self.value_conv, self.output_conv
        g = self.attention_weights if self.gate else None
        return CSAWeights(flat(q), q.bias, flat(k), k.bias, flat(v), v.bias, flat(o), o.bias,
                          flat(g) if g is not None else None, g.bias if g is not None else None,
                          getattr(self, "temperature", None))

    def forward(self, x1, x2, x3, x4, up1: int = 1, up3: int = 1) -> torch.Tensor:
        self._check(x1, x2, x3, x4, up1, up3)
        return cross_self_attention(x1, x2, x3, x4, self.weights(), heads=self.heads,
                                    attention=self.attention, up1=up1, up3=up3,
                                    backend=self.backend)
