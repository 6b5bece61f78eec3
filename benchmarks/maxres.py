"""Largest trainable resolution: the largest square HR crop at which one teacher training step
(forward, cf.losses.teacher_loss, backward, AdamW) fits in GPU memory, per backend and batch.

The search doubles the crop from ``start`` until a step runs out of memory (or ``cap`` is reached),
then bisects between the last size that fitted and the first that did not, on multiples of
``step`` (16: the crop must be a multiple of the ×4 scale). Out-of-memory errors are caught, and
gradients, the exception's frames and the allocator cache are freed before the next try. The
optimizer state is allocated by a first step at the smallest size, so every try measures the
steady-state step (parameters + gradients + AdamW state + activations). Assumes that fitting is
monotone in the crop size.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

import torch

from .cases import WIDTHS
from .models import train_step_instance
from .memory import free_device_memory, is_oom


def largest_fitting(fits: Callable[[int], bool], *, step: int = 16, start: int = 256,
                    cap: int = 4096, deadline: Optional[float] = None) -> Tuple[int, List[tuple], str]:
    """Largest multiple of ``step`` in [step, cap] for which ``fits`` is true, assuming
    monotonicity; returns (size or 0, [(size, fitted)] in try order, how the search ended)."""
    if step <= 0 or cap < step:
        raise ValueError(f"step, cap: expected 0 < step <= cap, got step={step}, cap={cap}")
    tries: List[tuple] = []

    def probe(s):
        ok = bool(fits(s))
        tries.append((s, ok))
        return ok

    def late():
        return deadline is not None and time.perf_counter() > deadline

    if not probe(step):
        return 0, tries, "smallest size does not fit"
    lo, hi = step, None
    s = max(step, (min(start, cap) // step) * step)
    while True:
        if s > lo:
            if probe(s):
                lo = s
            else:
                hi = s
                break
        if lo >= cap:
            return lo, tries, "cap reached"
        if late():
            return lo, tries, "deadline (lower bound)"
        s = min(cap, 2 * s)
    while hi - lo > step:
        if late():
            return lo, tries, "deadline (lower bound)"
        mid = ((lo + hi) // 2 // step) * step
        if mid <= lo:
            break
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, tries, "bisected"


def search(device: torch.device, dtype: torch.dtype, backend: str, batch: int, *,
           width: str = "paper", cap: int = 4096, start: int = 256, step: int = 16,
           recompute: bool = False, deadline: Optional[float] = None, log=print) -> dict:
    """One search for ``backend`` ("compile" = torch.compile(reference), recompiled per size);
    ``recompute`` builds the teacher with CSAKDConfig.recompute (fused CLRA backends keep only
    each block's input for backward)."""
    w = WIDTHS[width]
    compiled = backend == "compile"
    wrap = (lambda m: torch.compile(m, dynamic=False)) if compiled else (lambda m: m)
    rec = {"kind": "maxres", "backend": backend, "batch": batch, "cap": cap, "step": step,
           "case": "teacher_step", "width": width, "recompute": recompute}
    try:
        inst = train_step_instance(w, "reference" if compiled else backend, wrap, device, dtype,
                                   batch, step, cotrain=False, recompute=recompute)
        inst.step(inst.make_inputs(0), _NoProbe())  # allocates the AdamW state at the smallest size
    except Exception as e:  # noqa: BLE001
        free_device_memory(device)
        rec.update(status="oom" if is_oom(e) else "error", max_res=0,
                   error=f"{type(e).__name__}: {e}"[:500])
        return rec
    detail = {}

    def fits(res: int) -> bool:
        inst._args = (w, batch, res, device, dtype)
        ok, err = True, None
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            if compiled:  # a new size is a new graph; keep dynamo's per-code cache from filling up
                torch._dynamo.reset()
            x = inst.make_inputs(1)
            inst.prepare(x)
            inst.step(x, _NoProbe())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
            ok, err = False, str(e).splitlines()[0][:200]
        finally:
            x = None
            inst.prepare(())
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        free_device_memory(device)
        detail[res] = {"ok": ok, "seconds": time.perf_counter() - t0, "peak_bytes": peak, "error": err}
        log(f"maxres {backend}{' recompute' if recompute else ''} B{batch} {res}²: {'fits' if ok else 'OOM'}"
            + (f" (peak {peak / 2 ** 30:.1f} GiB)" if ok and peak else ""))
        return ok

    try:
        best, tries, how = largest_fitting(fits, step=step, start=start, cap=cap, deadline=deadline)
        rec.update(status="ok", max_res=best, ended=how,
                   tries=[{"res": s, **detail.get(s, {"ok": ok})} for s, ok in tries])
        if best in detail:
            rec["peak_bytes_at_max"] = detail[best]["peak_bytes"]
            rec["step_s_at_max"] = detail[best]["seconds"]
    except Exception as e:  # noqa: BLE001
        rec.update(status="error", error=f"{type(e).__name__}: {e}"[:500])
    finally:
        inst = None
        free_device_memory(device)
    return rec


class _NoProbe:
    def mark(self, label):
        pass

    def saved(self, name):
        import contextlib

        return contextlib.nullcontext()
