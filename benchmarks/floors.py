"""The two ceilings a fused op's floor is measured against, and the achieved fraction.

Ceilings, measured in the same run as the cases, on the run's device and dtype:
- bandwidth: ``dst.copy_(src)`` of a large buffer, bytes moved = 2 · nbytes (read + write);
- matmul rate: ``torch.mm`` of two n×n matrices in the run's dtype (with the run's TF32
  settings on a GPU), 2n³ flops.

Floor of one iteration = max(bytes / bandwidth, flops / matmul rate); the achieved fraction is
floor / measured median (1.0 = at the floor); docs/design.md, "Measuring". The bytes and flops of
each op's floor are in its case module (``benchmarks/ops/csa.py``, ``benchmarks/ops/clra.py``).
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


# --- the achieved fraction --------------------------------------------------------------------
def achieved(floor: dict, ceilings: dict, median_ms: float) -> dict:
    """Attach the floor time, which ceiling binds, and floor / measured."""
    t_mem = floor["bytes"] / ceilings["bandwidth_Bps"]
    t_cmp = floor["flops"] / ceilings["matmul_flops"]
    t = max(t_mem, t_cmp)
    return {**floor, "memory_floor_ms": t_mem * 1e3, "compute_floor_ms": t_cmp * 1e3,
            "floor_ms": t * 1e3, "bound": "memory" if t_mem >= t_cmp else "compute",
            "achieved_fraction": (t * 1e3) / median_ms if median_ms > 0 else None}
