"""Every registered backend of the fused ops against the reference, on one device.

    python -m benchmarks.agree --device cuda

Forward output and the gradients of every input and parameter of each backend in float32 against
the reference in float64 (the oracle), awkward shapes (C = 86, odd sizes, batch 2, ×4 upsampled x1/x3, grouped CLRA). Run by
``benchmarks/gpu_check.sh`` after the test suite, so that the compiled (not interpreted) Triton and
CUDA kernels the benchmark times are known to compute the right thing on that GPU. Exit status 1
when any backend disagrees or fails.
"""
from __future__ import annotations

import argparse
import sys

import torch

import csakd_fast as cf
from csakd_fast import backends
from csakd_fast._platform import triton_interpreter

TOL = {"cpu": 1e-4, "cuda": 5e-3}  # see _rel; Triton's fp32 tl.dot may use TF32 on a GPU


def _rel(a, b):
    """max |a − b| / max(max |b|, 1e-3), b the float64 reference: relative where b is of unit
    scale, absolute for the gradients that vanish in exact arithmetic (legacy q/k, normalized
    q/k biases), where the fused backends give exact zeros and b is rounding noise."""
    return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-3))


def _csa_setup(backend, device, attention):
    torch.manual_seed(0)
    m = cf.nn.CrossSelfAttention(86, 64, 4, gate=True, attention=attention, backend=backend).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    B, C, H, W, s = 2, 86, 36, 28, 4
    xs = [torch.randn(shape, generator=g, device=device) for shape in
          ((B, C, H // s, W // s), (B, C, H, W), (B, C, H // s, W // s), (B, C, H, W))]
    return m, xs, dict(up1=s, up3=s)


def _clra_setup(backend, device, groups):
    torch.manual_seed(0)
    m = cf.nn.CLRABlock(86, 43, groups, backend=backend).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    return m, [torch.randn((2, 86, 19, 13), generator=g, device=device)], {}


def _run(setup, backend, device, dtype=torch.float32):
    m, xs, kw = setup(backend, device)
    m = m.to(dtype)
    xs = [x.to(dtype).requires_grad_() for x in xs]
    out = m(*xs, **kw)
    g = torch.Generator(device=device).manual_seed(2)
    out.backward(torch.randn(out.shape, generator=g, device=device).to(dtype))
    grads = {f"d{i}": x.grad for i, x in enumerate(xs)}
    grads.update({f"d{n}": p.grad for n, p in m.named_parameters() if p.grad is not None})
    return out.detach(), grads


def check(device: torch.device, log=print, only=None) -> list:
    """One row per (op, variant, backend): every backend that can run on ``device`` (those in
    ``only`` when given) against the reference."""
    rows = []
    tol = TOL[device.type]
    setups = {"csa": [(f"attention={a}", lambda b, d, a=a: _csa_setup(b, d, a))
                      for a in ("paper", "normalized", "legacy")],
              "clra": [(f"groups={gr}", lambda b, d, gr=gr: _clra_setup(b, d, gr)) for gr in (1, 43)]}
    for op, variants in setups.items():
        names = [b for b in backends.available(op, device) if b != "reference"]
        if device.type == "cpu" and not triton_interpreter():
            names = [b for b in names if b != "triton"]
        if only is not None:
            names = [b for b in names if b in only]
        for label, setup in variants:
            ref_out, ref_grads = _run(setup, "reference", device, torch.float64)
            for b in names:
                try:
                    out, grads = _run(setup, b, device)
                    errs = {"out": _rel(out, ref_out)}
                    errs.update({k: _rel(grads[k], v) for k, v in ref_grads.items() if k in grads})
                    missing = sorted(set(ref_grads) - set(grads))
                    worst = max(errs, key=errs.get)
                    ok = errs[worst] <= tol and not missing
                    msg = f"worst {worst} {errs[worst]:.1e}" + (f", no grad for {missing}" if missing else "")
                except Exception as e:  # noqa: BLE001
                    ok, msg = False, f"{type(e).__name__}: {e}"[:300]
                rows.append({"op": op, "variant": label, "backend": b, "ok": ok, "detail": msg})
                log(f"{'ok  ' if ok else 'FAIL'} {op} {label} {b}: {msg} (tol {tol:.0e})")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agree", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device is available here", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if triton_interpreter():
            print("TRITON_INTERPRET=1 is set: the Triton kernels would not be compiled", file=sys.stderr)
            return 2
    rows = check(device)
    if not rows:
        print(f"no backend other than the reference is registered for {device}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
