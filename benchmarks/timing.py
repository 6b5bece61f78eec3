"""Wall time of one iteration, split into named segments, and the statistics reported.

CPU: ``time.perf_counter`` around the (synchronous) iteration. CUDA: a CUDA event at the start,
at every mark and at the end, read after one synchronize at the end of the run (the GPU time of
the stream, host launch gaps included); a 256 MiB buffer is zeroed before every timed iteration so
that no iteration finds the previous one's data in L2 (as ``triton.testing.do_bench`` does).
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

L2_FLUSH_BYTES = 256 * 2 ** 20


def summarize(samples_s: Sequence[float]) -> dict:
    """Median and spread of iteration times given in seconds; times reported in milliseconds.

    p25/p75 are the quartiles of the sorted samples (linear interpolation, as numpy's default);
    ``iqr_rel`` = (p75 − p25) / median."""
    if not samples_s:
        raise ValueError("samples_s: expected at least one timing sample, got none")
    xs = sorted(float(s) * 1e3 for s in samples_s)
    n = len(xs)

    def q(p):
        pos = p * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    med = statistics.median(xs)
    return {"median_ms": med, "p25_ms": q(0.25), "p75_ms": q(0.75), "min_ms": xs[0],
            "max_ms": xs[-1], "mean_ms": statistics.fmean(xs), "n": n,
            "iqr_rel": (q(0.75) - q(0.25)) / med if med > 0 else 0.0}


class Clock:
    """Segment timer for one device: ``begin()``, ``mark(label)`` …, ``end(label)`` per iteration,
    then ``samples()`` → one {label: seconds, "total": seconds} per iteration."""

    def __init__(self, device: torch.device, _root: Optional["Clock"] = None):
        self.device = device
        self.cuda = device.type == "cuda"
        self._iters: List[List[tuple]] = []
        self._flush = None
        self._root = _root   # the clock whose L2-flush buffer this one uses

    def fork(self) -> "Clock":
        """A clock with samples of its own that shares this one's L2-flush buffer (one per backend
        when the harness interleaves backends)."""
        return Clock(self.device, self._root or self)

    def _stamp(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    @property
    def flush_bytes(self) -> int:
        root = self._root or self
        return 0 if root._flush is None else root._flush.numel()

    def flush_cache(self) -> None:
        if self.cuda:
            root = self._root or self
            if root._flush is None:
                root._flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=self.device)
            root._flush.zero_()

    def begin(self) -> None:
        self._iters.append([(None, self._stamp())])

    def mark(self, label: str) -> None:
        self._iters[-1].append((label, self._stamp()))

    def end(self, label: str = "rest") -> None:
        self._iters[-1].append((label, self._stamp()))

    def samples(self) -> List[Dict[str, float]]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        out = []
        for stamps in self._iters:
            seg: Dict[str, float] = {}
            for (_, a), (label, b) in zip(stamps, stamps[1:]):
                dt = a.elapsed_time(b) / 1e3 if self.cuda else b - a
                seg[label] = seg.get(label, 0.0) + dt
            first, last = stamps[0][1], stamps[-1][1]
            seg["total"] = first.elapsed_time(last) / 1e3 if self.cuda else last - first
            out.append(seg)
        return out

    def reset(self) -> None:
        self._iters = []


class WallClock:
    """Synchronized wall time of a block (for compile time and warm-up estimates)."""

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device

    def __enter__(self):
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        return False
