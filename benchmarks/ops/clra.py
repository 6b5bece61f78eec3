"""The CLRA's cases: one CLRA block (three dense blocks and the outer residual, (B, nf, H, W) in
and out) as one ``module(x)``.

Families: ``clra`` (groups 1, the suite's op modes, with the floor below), ``clra_g<G>`` at the
suite's ``clra_grouped`` points with G = nf // 2 (the student's HSI-stream grouping), and
``clra_recompute`` (fwd+bwd, ``recompute=True``: a fused backend keeps only the block's input and
rebuilds the rest in backward; no ``compile``, the reference has nothing to recompute). With
``--groups`` the ``clra`` / ``clra_g<G>`` case and its ``_recompute`` for every G listed, at the
``clra`` and ``clra_recompute`` points.

Variant ``triton/dgrad`` (fwd+bwd cases, wherever the Triton backend runs: on CUDA, or on a CPU
under ``TRITON_INTERPRET=1`` when ``--backends`` names it): the Triton backend with its
backward's input gradients computed by the Triton kernel
(``csakd_fast.ops.clra.impl_triton.dgrad_mode("triton")``) instead of aten's (the default, the
``triton`` column beside it). The mode is read when backward runs, so the variant's scope wraps
the whole step, forward and backward; the two are timed interleaved in the same case: the
comparison that chooses ``CSAKD_CLRA_DGRAD``.

Floor (docs/design.md, "Measuring"; the buffers: "The fused CLRA"), per sample. A dense block
whose conv k reads its input prefix (cin_k channels) and writes its output (cout_k) into one
growth buffer: bytes = e·Σ_k(cin_k + cout_k) per pixel (≈ 2.2 kB in bf16 for nf = 86, gc = 43),
flops = 2·9·Σ_k cin_k·cout_k / groups per pixel (≈ 0.87 MFLOP); three dense blocks per CLRA block.
Backward (our lower bound): read the stored buffer (nf + 4gc), the incoming gradient (nf) and
write the input gradient (nf) per pixel and dense block; flops = 2 × forward (data and weight
gradients).
"""
from __future__ import annotations

from typing import List

import torch

import csakd_fast as cf

from ..cases import Case, Request, generator, module_cases, rand


def floor(batch: int, nf: int, gc: int, groups: int, height: int, width: int, mode: str,
          e: int) -> dict:
    """{"bytes", "flops", "formula"} of one iteration (see the module docstring)."""
    n = height * width
    cin = [nf + k * gc for k in range(5)]
    cout = [gc] * 4 + [nf]
    fwd_bytes = 3 * e * (sum(cin) + sum(cout)) * n
    fwd_flops = 3 * 2 * 9 * sum(i * o for i, o in zip(cin, cout)) / groups * n
    nbytes, flops = fwd_bytes, fwd_flops
    if mode == "fwd+bwd":
        nbytes += 3 * e * (nf + 4 * gc + 2 * nf) * n
        flops += 2 * fwd_flops
    return {"bytes": batch * nbytes, "flops": batch * flops,
            "formula": 'docs/design.md, "Measuring" (fwd); bwd: our lower bound '
                       '(see benchmarks/ops/clra.py)'}


def _triton_dgrad():
    from csakd_fast.ops.clra.impl_triton import dgrad_mode

    return dgrad_mode("triton")


def variants(mode: str) -> dict:
    """The variants of a CLRA case in ``mode``: ``triton/dgrad`` where backward runs."""
    return {"triton/dgrad": ("triton", _triton_dgrad)} if mode == "fwd+bwd" else {}


def name(groups: int, recompute: bool) -> str:
    return "clra" + (f"_g{groups}" if groups != 1 else "") + ("_recompute" if recompute else "")


def family(w: dict, groups: int, recompute: bool, points, modes, extra: bool = False) -> List[Case]:
    """The CLRA block cases of one (groups, recompute) at ``points`` (res, batch), one per mode."""
    nf, gc = w["nf"], w["gc"]
    if nf % groups or gc % groups:
        raise ValueError(f"groups: expected divisors of nf={nf} and gc={gc}, got {groups}")
    out = []
    for res, batch in points:
        shape = (batch, nf, res, res)

        def build(backend, device, dtype, shape=shape):
            torch.manual_seed(0)
            m = cf.nn.CLRABlock(nf, gc, groups, backend=backend, recompute=recompute)
            m = m.to(device, dtype)

            def make(seed):
                return (rand(shape, generator(device, seed), device, dtype),)

            return m, make

        fl = None if recompute else (
            lambda mode, e, res=res, batch=batch: floor(batch, nf, gc, groups, res, res, mode, e))

        params = {"nf": nf, "gc": gc, "groups": groups}
        if recompute:
            params["recompute"] = True
        out += module_cases(name(groups, recompute), ("clra",), res, batch, build, modes,
                            shapes={"x": shape}, params=params, floor=fl, compile=not recompute,
                            extra=extra, variants=variants, source=__name__)
    return out


def cases(request: Request) -> List[Case]:
    w, suite = request.width, request.suite
    asked = request.options.groups
    out = []
    for g in asked or (1,):
        out += family(w, g, False, request.points("clra"), request.modes(suite.op_modes))
    if not asked and request.points("clra_grouped"):
        out += family(w, max(1, w["nf"] // 2), False, request.points("clra_grouped"),
                      request.modes(suite.op_modes))
    backward_only = request.modes(("fwd+bwd",), allowed=("fwd+bwd",))
    for g in asked or (1,):
        out += family(w, g, True, request.points("clra_recompute"), backward_only, extra=True)
    return out
