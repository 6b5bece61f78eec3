"""CSAKDNet: the dual two-streamed network of CLRA blocks with a fusion module (docs/design.md,
"The network")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _checks, backends
from ..nn import CLRABlock
from .config import CSAKDConfig
from .fusion import SumFusion, make_fusion

STREAMS = ("hm", "mh", "h", "m")


class _Decoder(nn.Module):
    """The public code's ``FNN_Teacher`` / ``FNN_Student``; attribute names give the state-dict keys."""

    def __init__(self, cfg: CSAKDConfig, backend: dict):
        super().__init__()
        L, M, nf = cfg.bands, cfg.msi_bands, cfg.nf
        in_ch = {"hm": L + M, "mh": L + M, "h": L, "m": M}
        for stream, n in zip(STREAMS, cfg.layers):
            groups = getattr(cfg, f"{stream}_groups")
            setattr(self, f"{stream}conv1", nn.Conv2d(in_ch[stream], nf, 3, 1, 1))
            setattr(self, f"{stream}feat", nn.Sequential(*[
                CLRABlock(nf, cfg.gc, groups, backend=backend["clra"], recompute=cfg.recompute)
                for _ in range(n)]))
        self.fuse = nn.Conv2d(nf, L, 3, 1, 1, groups=cfg.head_groups)
        self.last = nn.Conv2d(L, L, 3, 1, 1, bias=False)
        fusion = make_fusion(cfg, backend["csa"])
        # the public model with adaptive_fuse=0 has no fuse_att: keep the state dict identical
        if isinstance(fusion, SumFusion):
            self._sum = fusion
        else:
            self.fuse_att = fusion

    @property
    def fusion(self) -> nn.Module:
        return self.fuse_att if hasattr(self, "fuse_att") else self._sum


class CSAKDNet(nn.Module):
    """CSAKD teacher or student.

    ``forward(lr_hsi, hr_msi)``: (B, L, h, w), (B, M, s·h, s·w) -> (hr_hsi (B, L, s·h, s·w),
    fused (B, nf, s·h, s·w)); the fused feature map feeds the distillation loss.

    Streams (x = LeakyReLU(0.2)): hm = CLRA^n(x(conv([bilinear_s(lr); msi]))) at HR,
    mh = CLRA^n(x(conv([lr; bicubic_1/s(msi)]))) at LR, m = CLRA^n(x(conv(msi))) at HR,
    h = CLRA^n(x(conv(lr))) at LR; fused = fusion(h↑s, m, mh↑s, hm) (↑ nearest);
    hr_hsi = last(x(fuse(fused))) (+ bilinear_s(lr) with ``config.residual``).

    ``backend``: a name for every fused op, or per op a mapping over ``backends.OPS`` ("csa",
    "clra"; ops left out get "auto"), e.g. ``{"csa": "cpp", "clra": "torch"}``, or the same as
    text, ``"csa=cpp,clra=torch"`` (:func:`csakd_fast.backends.per_op`).
    """

    def __init__(self, config: CSAKDConfig, backend="auto"):
        super().__init__()
        if not isinstance(config, CSAKDConfig):
            raise ValueError(f"config: expected a CSAKDConfig, got {type(config).__name__}")
        per_op = backends.per_op(backend)
        self.config, self.backend = config, (backend if isinstance(backend, str) else per_op)
        self.decoder = _Decoder(config, per_op)
        # the model checks its own inputs once; its layers see only what it computed from them
        for m in self.modules():
            if hasattr(m, "check_finite"):
                m.check_finite = False

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def _check_inputs(self, lr_hsi, hr_msi):
        cfg = self.config
        _checks.tensor("lr_hsi", lr_hsi, 4)
        _checks.tensor("hr_msi", hr_msi, 4)
        _checks.channels("lr_hsi", lr_hsi, cfg.bands, "bands")
        _checks.channels("hr_msi", hr_msi, cfg.msi_bands, "bands")
        _checks.same_device_dtype(("lr_hsi", "hr_msi"), (lr_hsi, hr_msi))
        _checks.like_parameters("lr_hsi", lr_hsi, self)
        B, _, h, w = lr_hsi.shape
        want = (B, cfg.msi_bands, cfg.scale * h, cfg.scale * w)
        if tuple(hr_msi.shape) != want:
            raise ValueError(f"hr_msi: expected shape {want} (batch of lr_hsi, scale={cfg.scale} × "
                             f"its {h}×{w} size), got {tuple(hr_msi.shape)}")
        _checks.finite("lr_hsi", lr_hsi)
        _checks.finite("hr_msi", hr_msi)

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor):
        self._check_inputs(lr_hsi, hr_msi)
        d, s = self.decoder, self.config.scale
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        up = F.interpolate(lr_hsi, scale_factor=s, mode="bilinear", align_corners=False)
        down = F.interpolate(hr_msi, scale_factor=1 / s, mode="bicubic", align_corners=False)
        hm = act(d.hmconv1(torch.cat([up, hr_msi], 1)))
        if self.config.use_hm_blocks:
            hm = d.hmfeat(hm)
        mh = d.mhfeat(act(d.mhconv1(torch.cat([lr_hsi, down], 1))))
        m = d.mfeat(act(d.mconv1(hr_msi)))
        h = d.hfeat(act(d.hconv1(lr_hsi)))
        fused = d.fusion(h, m, mh, hm, up1=s, up3=s)
        out = d.last(act(d.fuse(fused)))
        return (out + up if self.config.residual else out), fused

    # --- bookkeeping --------------------------------------------------------------------------
    def unused_parameter_prefixes(self) -> tuple:
        """State-dict prefixes of parameters that are built but never used in forward."""
        return () if self.config.use_hm_blocks else ("decoder.hmfeat.",)

    def num_parameters(self, used_only: bool = True) -> int:
        """Parameter count; ``used_only`` leaves out the built-but-unused blocks (public student)."""
        skip = self.unused_parameter_prefixes() if used_only else ()
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(skip))
