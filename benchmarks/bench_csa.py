"""Fused CSA benchmark: time and memory per backend, forward and forward+backward.

Backends side by side in one process: ``reference`` (eager, the baseline), ``compile``
(torch.compile of the reference layer) and every fused backend that can run on the device
(``torch``, ``triton``, ``cpp``, ``cuda``). For every
resolution the same weights (seed 0) and the same input sets (seeds 1000 + i, ``rotate`` of them,
used in turn so that caches do not flatter) go to every backend.

- ``fwd``: inference (``torch.no_grad``); ``fwd+bwd``: forward with gradients then backward from a
  fixed random output gradient (parameter and input gradients reset to None between repeats).
- time: median (and min) over ``repeats`` after ``warmup`` runs; CPU wall clock
  (time.perf_counter), CUDA events around each repeat with a synchronize.
- memory: bytes saved for backward, unique storages via saved_tensors_hooks, inputs and parameters
  excluded; on CUDA also the peak allocated during fwd+bwd above what was allocated before.
- floor (CUDA): the bytes the fused forward must move (design.md §3, x1/x3 read at LR):
  e·C·(4N + 2N/up² + N/up²) per sample, against the bandwidth of a large device copy measured in
  the same run and, for H100/H200, the nominal HBM bandwidth.

Standalone: ``python benchmarks/bench_csa.py --help``. Importable: :func:`run` returns the records
(list of dicts); :func:`cases` is the plug-in interface of the benchmark harness
(``benchmarks/cases.py``: ``cases(suite, device, dtype)``).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csakd_fast as cf  # noqa: E402
from csakd_fast import backends as _backends  # noqa: E402
from csakd_fast._io import atomic_write_text  # noqa: E402

NOMINAL_HBM_Bps = {"H100 PCIe": 2.0e12, "H100": 3.35e12, "H200": 4.8e12}


class _CSA(torch.nn.Module):
    """module(x1, x2, x3, x4) -> out, with the up factors of the model (x1, x3 at LR)."""

    def __init__(self, layer: torch.nn.Module, scale: int):
        super().__init__()
        self.layer, self.scale = layer, scale

    def forward(self, x1, x2, x3, x4):
        return self.layer(x1, x2, x3, x4, up1=self.scale, up3=self.scale)


def build(backend: str, device, dtype, channels=86, attn_dim=64, heads=4, gate=True,
          attention="paper", scale=4) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = cf.nn.CrossSelfAttention(channels, attn_dim, heads, gate=gate, attention=attention,
                                     backend=backend)
    return _CSA(layer, scale).to(device=device, dtype=dtype)


def make_inputs(seed: int, batch: int, channels: int, res: int, scale: int, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(seed)
    lo, hi = (batch, channels, res // scale, res // scale), (batch, channels, res, res)
    return tuple(torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in (lo, hi, lo, hi))


def min_bytes(channels: int, pixels: int, scale: int, itemsize: int) -> int:
    """Bytes the fused forward must move per sample: pass 1 reads x1 (LR), x2; pass 2 reads x1, x3
    (LR), x2, x4 and writes out."""
    lr = pixels // scale ** 2
    return itemsize * channels * (4 * pixels + 3 * lr)


# --- measurement ---------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, n_sets: int, repeats: int, warmup: int, device) -> tuple:
    for i in range(warmup):
        fn(i % n_sets)
    _sync(device)
    ts = []
    for r in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(r % n_sets)
            end.record()
            torch.cuda.synchronize(device)
            ts.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn(r % n_sets)
            ts.append(1e3 * (time.perf_counter() - t))
    return statistics.median(ts), min(ts)


def _saved_bytes(fn, exclude) -> int:
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def copy_bandwidth(device, nbytes=1 << 29, repeats=20) -> float:
    """Bytes/s of a large device-to-device copy (read + write)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    med, _ = _median_ms(lambda i: dst.copy_(src), 1, repeats, 3, device)
    return 2 * nbytes / (med / 1e3)


def _available(device) -> list:
    """Backends that can run, torch.compile last (its compile workers outlive the compile)."""
    fused = [b for b in _backends.available("csa", device) if b != "reference"]
    return ["reference", *fused, "compile"]


def run(device="cpu", dtype="float32", batch=2, res=(128, 256), channels=86, attn_dim=64,
        heads=4, scale=4, attention="paper", gate=True, repeats=5, warmup=2, rotate=3,
        backends=None, modes=("fwd", "fwd+bwd"), log=print) -> list:
    """Measure every backend at every resolution; returns one record per (res, backend, mode)."""
    device = torch.device(device)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    can = _available(device)
    skipped = [b for b in (backends or ()) if b not in can]
    if skipped:
        log(f"skipped (cannot run on {device} here): {', '.join(skipped)}")
    backends = [b for b in (backends or can) if b in can]
    cuda = device.type == "cuda"
    env = {"device": torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()} threads",
           "torch": torch.__version__}
    bw = copy_bandwidth(device) if cuda else None
    nominal = next((v for k, v in NOMINAL_HBM_Bps.items() if cuda and k in env["device"]), None)
    records = []
    for r in res:
        sets = [make_inputs(1000 + i, batch, channels, r, scale, device, dt) for i in range(rotate)]
        dout = torch.randn(batch, channels, r, r, generator=torch.Generator().manual_seed(7)).to(device, dt)
        base = {}
        for backend in backends:
            module = build("reference" if backend == "compile" else backend, device, dt, channels,
                           attn_dim, heads, gate, attention, scale)
            # static shapes: a recompile for the next resolution with dynamic shapes trips inductor
            call = torch.compile(module, dynamic=False) if backend == "compile" else module
            params = list(module.parameters())
            grad_sets = [tuple(x.detach().clone().requires_grad_() for x in s) for s in sets]

            def fwd(i):
                with torch.no_grad():
                    call(*sets[i])

            def fwd_bwd(i):
                for t in params + list(grad_sets[i]):
                    t.grad = None
                call(*grad_sets[i]).backward(dout)

            saved = _saved_bytes(lambda: call(*grad_sets[0]), params + list(grad_sets[0]))
            peak = None
            if cuda:
                fwd_bwd(0)
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                fwd_bwd(1 % rotate)
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device) - before
            for mode in modes:
                fn = fwd if mode == "fwd" else fwd_bwd
                med, mn = _median_ms(fn, rotate, repeats, warmup, device)
                rec = dict(op="csa", backend=backend, mode=mode, res=r, batch=batch,
                           channels=channels, scale=scale, attention=attention, gate=gate,
                           dtype=str(dt).replace("torch.", ""), median_ms=med, min_ms=mn,
                           repeats=repeats, saved_bytes=saved, peak_bytes=peak, **env)
                if mode == "fwd" and cuda:
                    floor = batch * min_bytes(channels, r * r, scale, torch.empty((), dtype=dt).element_size())
                    rec["floor_bytes"] = floor
                    rec["fraction_of_copy_bw"] = floor / bw / (med / 1e3)
                    if nominal:
                        rec["fraction_of_nominal_hbm"] = floor / nominal / (med / 1e3)
                if backend == "reference":
                    base[mode] = med
                rec["speedup_vs_reference"] = base.get(mode, float("nan")) / med
                records.append(rec)
                log(_line(rec))
            del module, call, grad_sets
    return records


def _line(rec) -> str:
    extra = ""
    if "fraction_of_copy_bw" in rec:
        extra = f"  floor: {100 * rec['fraction_of_copy_bw']:.0f}% of copy bw"
        if "fraction_of_nominal_hbm" in rec:
            extra += f", {100 * rec['fraction_of_nominal_hbm']:.0f}% of nominal HBM"
    peak = "" if rec["peak_bytes"] is None else f"  peak {rec['peak_bytes'] / 2**20:8.1f} MiB"
    return (f"{rec['res']:4d}²  {rec['backend']:9s} {rec['mode']:8s} {rec['median_ms']:9.2f} ms "
            f"(min {rec['min_ms']:8.2f})  x{rec['speedup_vs_reference']:5.2f} vs reference  "
            f"saved {rec['saved_bytes'] / 2**20:8.3f} MiB{peak}{extra}")


# --- plug-in for the benchmark harness (benchmarks/cases.py) --------------------------------------
def cases(suite: str, device, dtype) -> list:
    """Harness plug-in cases: the CSA (C = 86, ×4) in ``normalized`` mode per resolution (the
    harness's built-in ``csa`` case already measures the paper mode)."""
    res = {"smoke": (32,), "quick": (128,), "full": (128, 256, 512)}[suite]
    batch = 2 if torch.device(device).type == "cpu" else 8
    out = []
    for attention in ("normalized",):
        for r in res:
            def make(backend, r=r, attention=attention):
                module = build(backend, device, dtype, attention=attention)
                return module, lambda seed: make_inputs(seed, batch, 86, r, 4, device, dtype)

            out.append({"case": f"csa_{attention}", "ops": ("csa",), "res": r, "batch": batch,
                        "build": make, "compile": True,
                        "params": {"attention": attention, "gate": True, "scale": 4},
                        "shapes": {"x2": (batch, 86, r, r), "x1": (batch, 86, r // 4, r // 4)}})
    return out


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--res", type=int, nargs="+", default=[128, 256])
    p.add_argument("--channels", type=int, default=86)
    p.add_argument("--attention", default="paper", choices=["paper", "legacy", "normalized"])
    p.add_argument("--no-gate", action="store_true", help="the ungated (MHCA) form")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rotate", type=int, default=3, help="input sets used in turn")
    p.add_argument("--backends", nargs="+", default=None,
                   help="subset of reference compile torch triton cpp cuda (default: all that can run)")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--json", default=None, help="write the records here (atomically)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"csa benchmark: device={a.device} dtype={a.dtype} B={a.batch} C={a.channels} "
          f"attention={a.attention} gate={not a.no_gate} repeats={a.repeats} rotate={a.rotate}")
    recs = run(a.device, a.dtype, a.batch, tuple(a.res), a.channels, attention=a.attention,
               gate=not a.no_gate, repeats=a.repeats, warmup=a.warmup, rotate=a.rotate,
               backends=a.backends, modes=tuple(a.modes))
    if a.json:
        atomic_write_text(a.json, json.dumps(recs, indent=1, default=str))
    return recs


if __name__ == "__main__":
    main()
