"""CLRA block and training-step benchmark: reference vs torch.compile(reference) vs the fused
backends (torch, triton), with and without recompute. Time and memory, side by side in one run.

Standalone::

    python benchmarks/bench_clra.py --device cpu --res 128 --batch 1 --repeats 5
    python benchmarks/bench_clra.py --device cuda --dtype bfloat16 --res 256 --batch 8 --steps

Library: :func:`records` returns one dict per (case, backend, mode) — the shared harness
(``python -m benchmarks``) can import it; :func:`cases` is that harness's plug-in interface and
adds the recompute variants of the CLRA block (the harness's built-in ``clra`` case runs the
backends without recompute).

Timing: the backends run interleaved (repeat r of every backend, then repeat r + 1), each repeat
on the next of ``n_inputs`` random input sets, after ``warmup`` untimed calls; medians and
quartiles over the repeats. CPU: ``time.perf_counter``; CUDA: CUDA events around the call,
synchronised. Memory: bytes saved for backward over unique storages (saved_tensors_hooks, the
inputs and parameters not counted) on any device; on CUDA also ``max_memory_allocated`` during
one forward + backward above what was allocated before it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

if __package__ in (None, ""):   # run as a script: import the checkout's csakd_fast
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csakd_fast as cf  # noqa: E402
from csakd_fast import backends  # noqa: E402
from csakd_fast.ops.clra import clra, clra_reference  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --- measuring ------------------------------------------------------------------------------
def saved_bytes(fn: Callable, exclude: Sequence[torch.Tensor] = ()):
    """(bytes autograd saves for backward during ``fn()`` over unique storages, fn())."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: Dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_once(fn, device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stats(samples: List[float]) -> dict:
    xs = sorted(s * 1e3 for s in samples)
    q = lambda p: xs[min(len(xs) - 1, round(p * (len(xs) - 1)))]  # noqa: E731
    return {"median_ms": statistics.median(xs), "p25_ms": q(0.25), "p75_ms": q(0.75),
            "min_ms": xs[0], "n": len(xs)}


def _cuda_peak(fn, device) -> Optional[int]:
    if device.type != "cuda":
        return None
    _sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated() - base


def _env(device, dtype) -> dict:
    import platform

    env = {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                           else platform.processor() or platform.machine())}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    return env


# --- the CLRA block -----------------------------------------------------------------------------
def block_variants(device: torch.device, compile_ref: bool = True,
                   interpreted: bool = False) -> Dict[str, Callable]:
    """name -> fn(x, weights, biases, groups) for every variant runnable on ``device``; Triton on
    a CPU (the interpreter: a correctness run, not a timing) only with ``interpreted``."""
    out = {"reference": lambda x, w, b, g: clra_reference(x, w, b, g)}
    if compile_ref:
        compiled = torch.compile(clra_reference, dynamic=False)
        out["compile(reference)"] = lambda x, w, b, g: compiled(x, w, b, g)
    for name in ("torch", "triton"):
        if name in backends.available("clra", device) and not (
                name == "triton" and device.type != "cuda" and not interpreted):
            out[name] = lambda x, w, b, g, n=name: clra(x, w, b, groups=g, backend=n)
            out[name + "+recompute"] = lambda x, w, b, g, n=name: clra(x, w, b, groups=g,
                                                                       recompute=True, backend=n)
    if "triton" in out:
        # the backward's input gradients by the Triton kernel (accumulating into the gradient
        # buffer in place) instead of aten's: the choice the GPU run settles
        # (the mode is read when backward runs: ``scope`` wraps forward and backward)
        from csakd_fast.ops.clra.impl_triton import dgrad_mode

        for name in ("triton", "triton+recompute"):
            fn = lambda x, w, b, g, fn=out[name]: fn(x, w, b, g)  # noqa: E731
            fn.scope = lambda: dgrad_mode("triton")
            out[name.replace("triton", "triton/dgrad")] = fn
    return out


def block_records(device="cpu", dtype=torch.float32, res=128, batch=1, nf=86, gc=43, groups=1,
                  repeats=5, warmup=1, n_inputs=3, modes=("fwd", "fwd+bwd"),
                  compile_ref=True, variants: Optional[Sequence[str]] = None) -> List[dict]:
    """One record per (variant, mode) for one CLRA block of (batch, nf, res, res)."""
    device = torch.device(device)
    torch.manual_seed(0)
    blk = cf.nn.CLRABlock(nf, gc, groups, backend="reference").to(device, dtype)
    ws = [c.weight for c in blk.convs()]
    bs = [c.bias for c in blk.convs()]
    gen = torch.Generator(device="cpu").manual_seed(1000)
    xs = [torch.randn(batch, nf, res, res, generator=gen).to(device, dtype).requires_grad_()
          for _ in range(n_inputs)]
    gy = torch.randn(batch, nf, res, res, generator=gen).to(device, dtype)
    fns = block_variants(device, compile_ref,
                         interpreted=any(v.startswith("triton") for v in variants or ()))
    if variants:
        fns = {k: v for k, v in fns.items() if k in variants}
    base = dict(case="clra", res=res, batch=batch, nf=nf, gc=gc, groups=groups, **_env(device, dtype))
    recs = []
    for mode in modes:
        def call(fn, x, mode=mode):
            with getattr(fn, "scope", contextlib.nullcontext)():
                if mode == "fwd":
                    with torch.no_grad():
                        return fn(x, ws, bs, groups)
                y = fn(x, ws, bs, groups)
                return torch.autograd.grad(y, [x] + ws + bs, gy)

        # a variant that differs only in backward (a ``scope``) is not timed in inference
        run_fns = {k: v for k, v in fns.items() if mode != "fwd" or not hasattr(v, "scope")}
        times = {k: [] for k in run_fns}
        first = {}
        for k, fn in run_fns.items():       # warm-up (compilation included), reported apart
            t0 = time.perf_counter()
            for _ in range(warmup):
                call(fn, xs[0])
            _sync(device)
            first[k] = time.perf_counter() - t0
        for r in range(repeats):
            for k, fn in run_fns.items():
                times[k].append(_time_once(lambda: call(fn, xs[r % n_inputs]), device))
        for k, fn in run_fns.items():
            rec = dict(base, backend=k, mode=mode, warmup_s=first[k], **_stats(times[k]))
            if mode == "fwd+bwd":
                rec["saved_bytes"], _ = saved_bytes(lambda: fn(xs[0], ws, bs, groups), [xs[0]] + ws + bs)
                rec["cuda_peak_bytes"] = _cuda_peak(lambda: call(fn, xs[0]), device)
            recs.append(rec)
    _add_ratios(recs)
    return recs


def _add_ratios(recs: List[dict]) -> None:
    """speedup = reference median / median; saved_ratio = saved bytes / the reference's."""
    keyf = lambda r: (r["case"], r["mode"], r.get("preset"), r.get("groups"))  # noqa: E731
    ref = {keyf(r): r for r in recs if r["backend"] == "reference" and "median_ms" in r}
    for r in recs:
        b = ref.get(keyf(r))
        if b is None or "median_ms" not in r:
            continue
        r["speedup_vs_reference"] = b["median_ms"] / r["median_ms"]
        if r.get("saved_bytes") is not None and b.get("saved_bytes"):
            r["saved_ratio_vs_reference"] = r["saved_bytes"] / b["saved_bytes"]


# --- whole teacher and student training steps -----------------------------------------------------
def step_records(device="cpu", dtype=torch.float32, res=64, batch=1, bands=172, msi_bands=4,
                 repeats=3, warmup=1, variants: Optional[Sequence[str]] = None) -> List[dict]:
    """Co-training step as the paper trains (teacher step, then a student step on the detached
    teacher outputs; AdamW), per variant: the reference, the fused CLRA ("torch"/"triton"; the
    CSA op on its fused backend when registered, else on the reference), ± recompute."""
    device = torch.device(device)
    fused = [b for b in ("torch", "triton") if b in backends.available("clra", device)
             and not (b == "triton" and device.type != "cuda")]
    plan = {"reference": ("reference", False)}
    for b in fused:
        be = b if b in backends.available("csa", device) else {"clra": b, "csa": "reference"}
        plan[b] = (be, False)
        plan[b + "+recompute"] = (be, True)
    if variants:
        plan = {k: v for k, v in plan.items() if k in variants}
    gen = torch.Generator(device="cpu").manual_seed(1000)
    s = 4
    lr = torch.randn(batch, bands, res // s, res // s, generator=gen).to(device, dtype)
    msi = torch.randn(batch, msi_bands, res, res, generator=gen).to(device, dtype)
    target = torch.rand(batch, bands, res, res, generator=gen).to(device, dtype)
    env = _env(device, dtype)
    models = {}
    for k, (be, rec) in plan.items():
        torch.manual_seed(0)
        t = cf.CSAKDNet(cf.CSAKDConfig.teacher(bands=bands, msi_bands=msi_bands, recompute=rec),
                        backend=be).to(device, dtype)
        st = cf.CSAKDNet(cf.CSAKDConfig.student(bands=bands, msi_bands=msi_bands, recompute=rec),
                         backend=be).to(device, dtype)
        models[k] = (t, st, torch.optim.AdamW(t.parameters(), 1e-4),
                     torch.optim.AdamW(st.parameters(), 1e-4))

    def teacher_step(k):
        t, _, opt, _ = models[k]
        out, fused_map = t(lr, msi)
        cf.losses.teacher_loss(out, target)[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.detach(), fused_map.detach()

    def student_step(k, t_out, t_fused):
        _, st, _, opt = models[k]
        out, fused_map = st(lr, msi)
        cf.losses.student_loss(out, target, t_out, fused_map, t_fused)[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    recs = []
    for k in list(plan):
        try:
            for _ in range(warmup):
                student_step(k, *teacher_step(k))
        except torch.cuda.OutOfMemoryError as e:   # recorded, and the variant left out
            recs.append(dict(case="train_step", preset="teacher+student", backend=k, mode="step",
                             res=res, batch=batch, error=f"out of memory: {str(e)[:200]}", **env))
            del plan[k], models[k]
            torch.cuda.empty_cache()
    times = {(k, p): [] for k in plan for p in ("teacher", "student")}
    for _ in range(repeats):
        for k in plan:
            holder = {}
            times[(k, "teacher")].append(_time_once(lambda: holder.update(o=teacher_step(k)), device))
            times[(k, "student")].append(_time_once(lambda: student_step(k, *holder["o"]), device))
    for k in plan:
        t, st = models[k][:2]
        for preset, m in (("teacher", t), ("student", st)):
            n, _ = saved_bytes(lambda: m(lr, msi), [lr, msi] + list(m.parameters()))
            if preset == "teacher":
                peak = _cuda_peak(lambda: teacher_step(k), device)
            else:
                t_out = teacher_step(k)
                peak = _cuda_peak(lambda: student_step(k, *t_out), device)
            recs.append(dict(case="train_step", preset=preset, backend=k, mode="step", res=res,
                             batch=batch, bands=bands, msi_bands=msi_bands, saved_bytes=n,
                             cuda_peak_bytes=peak, **env, **_stats(times[(k, preset)])))
    _add_ratios(recs)
    return recs


def records(device="cpu", dtype="float32", res=128, batch=1, repeats=5, steps=False,
            step_res=None, groups=(1,), compile_ref=True, **kw) -> List[dict]:
    """Block records for each of ``groups`` (+ training-step records with ``steps``)."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    recs = []
    for g in groups:
        recs += block_records(device, dt, res, batch, groups=g, repeats=repeats,
                              compile_ref=compile_ref, **kw)
    if steps:
        recs += step_records(device, dt, step_res or res, batch, repeats=max(2, repeats // 2))
    return recs


# --- plug-in for the shared harness (benchmarks/cases.py) -----------------------------------------
def cases(suite: str, device, dtype) -> List[dict]:
    """The CLRA block with ``recompute=True`` (the harness's ``clra`` case has it off)."""
    points = {"smoke": [(16, 1)], "quick": [(128, 1)] if torch.device(device).type == "cpu"
              else [(256, 8)], "full": [(128, 1), (256, 1)] if torch.device(device).type == "cpu"
              else [(256, 8), (512, 8)]}[suite]
    nf, gc = (8, 4) if suite == "smoke" else (86, 43)
    out = []
    for res, batch in points:
        def build(backend, res=res, batch=batch):
            torch.manual_seed(0)
            m = cf.nn.CLRABlock(nf, gc, 1, backend=backend, recompute=True).to(device, dtype)

            def make(seed):
                g = torch.Generator(device="cpu").manual_seed(seed)
                return (torch.randn(batch, nf, res, res, generator=g).to(device, dtype),)

            return m, make

        out.append({"case": "clra_recompute", "ops": ("clra",), "res": res, "batch": batch,
                    "build": build, "modes": ("fwd+bwd",), "shapes": {"x": (batch, nf, res, res)},
                    "params": {"nf": nf, "gc": gc, "groups": 1, "recompute": True},
                    "compile": False})
    return out


def _table(recs: List[dict]) -> str:
    rows = ["| case | groups/preset | backend | mode | median ms | p25–p75 | × ref | saved MiB | saved / ref | CUDA peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in recs:
        if "error" in r:
            rows.append(f"| {r['case']} {r['res']}² B={r['batch']} | {r.get('preset')} | "
                        f"{r['backend']} | {r['mode']} | {r['error'][:60]} | | | | | |")
            continue
        sb, pk, ratio = r.get("saved_bytes"), r.get("cuda_peak_bytes"), r.get("saved_ratio_vs_reference")
        cells = [f"{r['case']} {r['res']}² B={r['batch']}", str(r.get("preset", r.get("groups"))),
                 r["backend"], r["mode"], f"{r['median_ms']:.1f}",
                 f"{r['p25_ms']:.1f}–{r['p75_ms']:.1f}",
                 f"{r.get('speedup_vs_reference', float('nan')):.2f}",
                 "" if sb is None else f"{sb / 2**20:.0f}", "" if ratio is None else f"{ratio:.1%}",
                 "" if pk is None else f"{pk / 2**20:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default=None, choices=tuple(DTYPES))
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--groups", default="1", help="comma list, e.g. 1,43")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--variants", default=None, help="comma list (reference,compile(reference),torch,...)")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile(reference)")
    p.add_argument("--steps", action="store_true", help="also the teacher and student training steps")
    p.add_argument("--step-res", type=int, default=None)
    p.add_argument("--json", default=None, help="write the records here")
    a = p.parse_args(argv)
    dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    variants = a.variants.split(",") if a.variants else None
    recs = records(a.device, dtype, a.res, a.batch, a.repeats, steps=a.steps, step_res=a.step_res,
                   groups=tuple(int(g) for g in a.groups.split(",")), compile_ref=not a.no_compile,
                   modes=tuple(a.modes.split(",")), variants=variants)
    print(_table(recs))
    if a.json:
        from csakd_fast._io import atomic_write_text

        atomic_write_text(a.json, json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
