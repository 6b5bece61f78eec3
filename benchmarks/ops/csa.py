"""The CSA's cases: the cross self-attention fusion module (gated, C = nf, x1 and x3 at the low
resolution, ×scale) as one ``module(x1, x2, x3, x4)``.

Families: ``csa`` (``attention="paper"``, the suite's op modes, with the floor below) and
``csa_normalized`` (fwd and fwd+bwd); with ``--attention`` one family per mode listed (``csa``
for paper, ``csa_<mode>``) at the ``csa`` points. Only the paper mode has a floor: ``normalized``
reduces two more Gram matrices in pass 1 and ``legacy`` skips the attention's effect.

Floor (docs/design.md, "Measuring"; the passes: "The fused CSA"), per sample, HR pixels N = H·W,
element size e. Forward: pass 1 reads x1, x2 (the Gram matrix and sums), pass 2 reads x1..x4 and
writes out; x1, x3 are read at their low resolution (N/up1², N/up3² pixels) as the fused op reads
them at p // up, so bytes = e·C·(4N + 2N/up1² + N/up3²) (7CN when up = 1) and
flops ≈ (4C² + 32C)·N. Backward (our lower bound: the same shape as the forward): read x1..x4 and
the output gradient once, write the four input gradients once,
bytes = e·C·(5N + 2N/up1² + 2N/up3²), flops = 2 × forward.
"""
from __future__ import annotations

from typing import List

import torch

import csakd_fast as cf

from ..cases import Call, Case, Request, generator, module_cases, rand

ATTENTIONS = ("paper", "normalized", "legacy")


def floor(batch: int, channels: int, height: int, width: int, up1: int, up3: int, mode: str,
          e: int) -> dict:
    """{"bytes", "flops", "formula"} of one iteration (see the module docstring)."""
    n = height * width
    n1, n3 = n / up1 ** 2, n / up3 ** 2
    fwd_bytes = e * channels * (4 * n + 2 * n1 + n3)
    fwd_flops = (4 * channels ** 2 + 32 * channels) * n
    nbytes, flops = fwd_bytes, fwd_flops
    if mode == "fwd+bwd":
        nbytes += e * channels * (5 * n + 2 * n1 + 2 * n3)
        flops += 2 * fwd_flops
    return {"bytes": batch * nbytes, "flops": batch * flops,
            "formula": 'docs/design.md, "Measuring" (fwd); bwd: our lower bound '
                       '(see benchmarks/ops/csa.py)'}


def name(attention: str) -> str:
    return "csa" if attention == "paper" else f"csa_{attention}"


def family(w: dict, attention: str, points, modes, extra: bool = False) -> List[Case]:
    """The CSA cases of one attention mode at ``points`` (res, batch), one per mode."""
    C, s = w["nf"], w["scale"]
    out = []
    for res, batch in points:
        lo, hi = (batch, C, res // s, res // s), (batch, C, res, res)
        shapes = {"x1": lo, "x2": hi, "x3": lo, "x4": hi}

        def build(backend, device, dtype, shapes=shapes):
            torch.manual_seed(0)
            m = cf.nn.CrossSelfAttention(C, w["attn_dim"], w["heads"], gate=True,
                                         attention=attention, backend=backend).to(device, dtype)

            def make(seed):
                g = generator(device, seed)
                return tuple(rand(sh, g, device, dtype) for sh in shapes.values())

            return Call(m, up1=s, up3=s), make

        fl = None if attention != "paper" else (
            lambda mode, e, res=res, batch=batch: floor(batch, C, res, res, s, s, mode, e))

        out += module_cases(
            name(attention), ("csa",), res, batch, build, modes, shapes=shapes, floor=fl,
            params={"channels": C, "attn_dim": w["attn_dim"], "heads": w["heads"], "gate": True,
                    "attention": attention, "up1": s, "up3": s},
            extra=extra, source=__name__)
    return out


def cases(request: Request) -> List[Case]:
    w, suite = request.width, request.suite
    asked = request.options.attention
    if asked:
        bad = [a for a in asked if a not in ATTENTIONS]
        if bad:
            raise ValueError(f"attention: expected modes among {', '.join(ATTENTIONS)}, got {bad}")
        return [c for a in asked for c in family(w, a, request.points("csa"),
                                                 request.modes(suite.op_modes), extra=a != "paper")]
    return (family(w, "paper", request.points("csa"), request.modes(suite.op_modes))
            + family(w, "normalized", request.points("csa_normalized"),
                     request.modes(("fwd", "fwd+bwd")), extra=True))
