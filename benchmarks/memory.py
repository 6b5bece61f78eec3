"""Memory of one iteration: bytes saved for backward, process peak RSS (CPU), CUDA peak (GPU).

Bytes saved for backward are counted on any device by :class:`csakd_fast.memory.SavedBytes`
(unique storages through ``saved_tensors_hooks``; docs/design.md, "Measuring"), the one counter
the tests use too.

Peak RSS on the CPU is the *increase* of the process's resident set during one iteration above its
resident set at the iteration's start: before the iteration the harness runs the garbage collector,
returns freed heap pages to the OS (glibc ``malloc_trim``), and resets the kernel's high-water mark
(``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0); the peak is ``VmHWM`` afterwards. Where the reset is
not available the fallback is the growth of ``ru_maxrss`` (a process-lifetime maximum: 0 when an
earlier case went higher, so a lower bound); the record names the method used.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
from pathlib import Path
from typing import Optional

import torch

from csakd_fast.memory import SavedBytes, saved_bytes  # noqa: F401  (the one counter, re-exported)

MiB = 2 ** 20


# --- process resident set (CPU) ----------------------------------------------------------------
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> Optional[int]:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def _ru_maxrss_bytes() -> int:
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v if sys.platform == "darwin" else v * 1024  # bytes on macOS, KiB on Linux


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def trim_heap() -> None:
    """Collect garbage and give freed heap pages back to the OS (glibc), so that memory freed by
    an earlier case is not silently reused below the measured baseline."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssPeak:
    """``with RssPeak() as r: step()`` → ``r.result()``: the increase of resident memory during the
    block above its start (bytes), the absolute peak where known, and the method."""

    def __enter__(self):
        trim_heap()
        self.start = rss_bytes()
        self.method = "vmhwm-reset" if self.start is not None and _reset_hwm() else "ru_maxrss-delta"
        self._maxrss0 = _ru_maxrss_bytes()
        return self

    def __exit__(self, *exc):
        if self.method == "vmhwm-reset":
            self.peak = _status_kb("VmHWM") * 1024
            self.increase = max(0, self.peak - self.start)
        else:
            self.peak = None
            self.increase = max(0, _ru_maxrss_bytes() - self._maxrss0)
        return False

    def result(self) -> dict:
        return {"rss_increase_bytes": self.increase, "rss_peak_bytes": self.peak,
                "rss_start_bytes": self.start, "rss_method": self.method}


# --- CUDA ---------------------------------------------------------------------------------------
class CudaPeak:
    """``torch.cuda.max_memory_allocated`` over the block, absolute and above its start;
    ``exclude_bytes`` (the harness's own L2-flush buffer) is taken off the absolute figures."""

    def __init__(self, device: torch.device, exclude_bytes: int = 0):
        self.device, self.exclude = device, exclude_bytes

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.start = torch.cuda.memory_allocated(self.device) - self.exclude
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self.exclude
        return False

    def result(self) -> dict:
        return {"cuda_peak_bytes": self.peak, "cuda_peak_increase_bytes": self.peak - self.start,
                "cuda_start_bytes": self.start}


def peak_probe(device: torch.device, exclude_bytes: int = 0):
    return CudaPeak(device, exclude_bytes) if device.type == "cuda" else RssPeak()


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    else:
        trim_heap()


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, (RuntimeError, MemoryError)) and (
        isinstance(err, MemoryError) or "out of memory" in str(err).lower()
        or "can't allocate memory" in str(err).lower())
