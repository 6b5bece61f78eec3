"""The physical floor of the fused ops and the two ceilings it is measured against.

Ceilings, measured in the same run as the cases, on the run's device and dtype:
- bandwidth: ``dst.copy_(src)`` of a large buffer, bytes moved = 2 · nbytes (read + write);
- matmul rate: ``torch.mm`` of two n×n matrices in the run's dtype (with the run's TF32
  settings on a GPU), 2n³ flops.

Floor of one iteration = max(bytes / bandwidth, flops / matmul rate); the achieved fraction is
floor / measured median (1.0 = at the floor). Per-sample counts, HR pixels N = H·W, element size e:

CSA (design.md §3). Forward: pass 1 reads x1, x2 (the Gram matrix and sums), pass 2 reads x1..x4
and writes out; x1, x3 are read at their low resolution (N/up1², N/up3² pixels) as the fused op
reads them at p // up, so bytes = e·C·(4N + 2N/up1² + N/up3²) (7CN when up = 1) and
flops ≈ (4C² + 32C)·N. Backward (our lower bound, design.md only says it has the same shape): read
x1..x4 and the output gradient once, write the four input gradients once,
bytes = e·C·(5N + 2N/up1² + 2N/up3²), flops = 2 × forward.

CLRA (design.md §4). A dense block whose conv k reads its input prefix (cin_k channels) and writes
its output (cout_k) into one growth buffer: bytes = e·Σ_k(cin_k + cout_k) per pixel (≈ 2.2 kB in
bf16 for nf = 86, gc = 43), flops = 2·9·Σ_k cin_k·cout_k / groups per pixel (≈ 0.87 MFLOP); three
dense blocks per CLRA block. Backward (our lower bound): read the stored buffer (nf + 4gc), the
incoming gradient (nf) and write the input gradient (nf) per pixel and dense block; flops = 2 ×
forward (data and weight gradients).
"""
from __future__ import annotations

import torch

from .timing import Clock, WallClock, summarize


def elem_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# --- ceilings ------------------------------------------------------------------------------------
def _time(fn, device, reps):
    fn()
    clock = Clock(device)
    for _ in range(reps):
        clock.begin()
        fn()
        clock.end("op")
    return summarize([s["total"] for s in clock.samples()])["median_ms"] / 1e3


def measure_ceilings(device: torch.device, dtype: torch.dtype, *, small: bool = False) -> dict:
    """Copy bandwidth (bytes/s) and matmul rate (flop/s) of ``device`` in ``dtype``."""
    cuda = device.type == "cuda"
    nbytes = (1 << 20 if small else (1 << 29 if cuda else 1 << 27))
    n = 128 if small else (8192 if cuda else 1024)

    def copy_time():
        src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        return _time(lambda: dst.copy_(src), device, 5 if small else (20 if cuda else 7))

    def mm_time():
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        return _time(lambda: torch.mm(a, b), device, 3 if small else (20 if cuda else 5))

    with WallClock(device) as wc:
        t_copy = copy_time()
        t_mm = mm_time()
    return {"bandwidth_Bps": 2 * nbytes / t_copy, "bandwidth_bytes": nbytes,
            "bandwidth_method": "dst.copy_(src), 2 × nbytes per copy, median",
            "matmul_flops": 2 * n ** 3 / t_mm, "matmul_n": n, "matmul_dtype": str(dtype).replace("torch.", ""),
            "matmul_method": "torch.mm n×n, 2n³ flops, median", "measure_s": wc.seconds}


# --- floors --------------------------------------------------------------------------------------
def csa_floor(batch: int, channels: int, height: int, width: int, up1: int, up3: int, mode: str,
              e: int) -> dict:
    n = height * width
    n1, n3 = n / up1 ** 2, n / up3 ** 2
    fwd_bytes = e * channels * (4 * n + 2 * n1 + n3)
    fwd_flops = (4 * channels ** 2 + 32 * channels) * n
    nbytes, flops = fwd_bytes, fwd_flops
    if mode == "fwd+bwd":
        nbytes += e * channels * (5 * n + 2 * n1 + 2 * n3)
        flops += 2 * fwd_flops
    return {"bytes": batch * nbytes, "flops": batch * flops,
            "formula": "design.md §3 (fwd); bwd: our lower bound (see benchmarks/floors.py)"}


def clra_floor(batch: int, nf: int, gc: int, groups: int, height: int, width: int, mode: str,
               e: int) -> dict:
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
            "formula": "design.md §4 (fwd); bwd: our lower bound (see benchmarks/floors.py)"}


def achieved(floor: dict, ceilings: dict, median_ms: float) -> dict:
    """Attach the floor time, which ceiling binds, and floor / measured."""
    t_mem = floor["bytes"] / ceilings["bandwidth_Bps"]
    t_cmp = floor["flops"] / ceilings["matmul_flops"]
    t = max(t_mem, t_cmp)
    return {**floor, "memory_floor_ms": t_mem * 1e3, "compute_floor_ms": t_cmp * 1e3,
            "floor_ms": t * 1e3, "bound": "memory" if t_mem >= t_cmp else "compute",
            "achieved_fraction": (t * 1e3) / median_ms if median_ms > 0 else None}
