"""A run's JSON rendered as a markdown table and PNG plots (matplotlib, Agg backend).

``python -m benchmarks.report RUN/results.json [--out DIR]`` re-renders results.md and the plots
of a finished (or interrupted) run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, List

from csakd_fast._io import atomic_path, atomic_write_text

BACKEND_ORDER = ("reference", "compile", "torch", "triton", "cpp", "cuda", "auto")
MiB = 2 ** 20


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def dumps(doc) -> str:
    return json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n"


def _order(b):
    return (BACKEND_ORDER.index(b) if b in BACKEND_ORDER else len(BACKEND_ORDER), b)


def group_key(r):
    return (r["case"], r["mode"], r["res"], r["batch"])


def add_comparisons(records: List[dict], maxres: List[dict] = ()) -> None:
    """Speedups vs the reference and vs compile, saved bytes vs the reference (same case, same run)."""
    by = {}
    for r in records:
        if r.get("status") == "ok":
            by.setdefault(group_key(r), {})[r["backend"]] = r
    for r in records:
        if r.get("status") != "ok":
            continue
        g = by[group_key(r)]
        med = r["time"]["median_ms"]
        for base, field in (("reference", "speedup_vs_reference"), ("compile", "speedup_vs_compile")):
            b = g.get(base)
            r[field] = b["time"]["median_ms"] / med if b is not None and med > 0 else None
        ref = g.get("reference")
        sa, ra = r.get("saved_bytes_activations"), (ref or {}).get("saved_bytes_activations")
        r["saved_vs_reference"] = sa / ra if sa is not None and ra else None
    ref_res = {m["batch"]: m.get("max_res") for m in maxres
               if m.get("backend") == "reference" and not m.get("recompute")
               and m.get("status") == "ok"}
    for m in maxres:
        base = ref_res.get(m.get("batch"))
        if m.get("status") == "ok" and base:
            m["res_vs_reference"] = m["max_res"] / base
            m["pixels_vs_reference"] = (m["max_res"] / base) ** 2


def _fmt_ms(ms):
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1e3:.3g} s"


def log_line(i: int, n: int, rec: dict) -> str:
    """The harness's progress line for record ``i`` of ``n``."""
    head = f"[{i}/{n}] {rec['case']} {rec['mode']} {rec['res']}² B{rec['batch']} {rec['backend']}:"
    if rec.get("status") != "ok":
        return f"{head} {rec.get('status')} ({rec.get('error', '')[:200]})"
    t = rec["time"]
    bits = [f"{_fmt_ms(t['median_ms'])} (IQR {100 * t['iqr_rel']:.1f}%, n={t['n']})"]
    if rec.get("saved_bytes_activations") is not None:
        bits.append(f"saved {rec['saved_bytes_activations'] / 2 ** 20:.1f} MiB")
    if rec.get("compile_s") is not None:
        bits.append(f"compile {rec['compile_s']:.1f} s")
    if rec.get("check") and not rec["check"]["ok"]:
        bits.append(f"CHECK rel err {rec['check']['rel_l2_err']:.2e} > {rec['check']['tol']:.0e}")
    return f"{head} " + ", ".join(bits)


# --- markdown ------------------------------------------------------------------------------------
def _ms(x):
    if x is None:
        return ""
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def _mib(b):
    return "" if b is None else (f"{b / MiB:.3g}" if b < 1e4 * MiB else f"{b / MiB:,.0f}")


def _x(v):
    return "" if v is None else f"{v:.2f}×"


def _row(r, device):
    if r.get("status") != "ok":
        return [str(r["res"]), str(r["batch"]), r["backend"],
                f"**{r.get('status')}**: {str(r.get('error', ''))[:80].replace('|', '/')}"] + [""] * 11
    t = r["time"]
    seg = r.get("segments_ms") or {}
    split = " / ".join(f"{k} {_ms(v)}" for k, v in seg.items())
    peak = r.get("cuda_peak_bytes") if device == "cuda" else r.get("rss_increase_bytes")
    fl = r.get("floor") or {}
    frac = fl.get("achieved_fraction")
    check = r.get("check")
    chk = "" if check is None else ("ok" if check["ok"] else f"✗ {check['rel_l2_err']:.1e}")
    return [str(r["res"]), str(r["batch"]), r["backend"], _ms(t["median_ms"]),
            f"{100 * t['iqr_rel']:.1f}%", split, _x(r.get("speedup_vs_reference")),
            _x(r.get("speedup_vs_compile")), _mib(r.get("saved_bytes_activations")),
            "" if r.get("saved_vs_reference") is None else f"{r['saved_vs_reference']:.3g}",
            _mib(peak), _ms(fl.get("floor_ms")) + (f" ({'mem' if fl['bound'] == 'memory' else 'cmp'})" if fl else ""),
            "" if frac is None else f"{100 * frac:.1f}%",
            _compile_cell(r), chk]


def _compile_cell(r):
    if r.get("compile_s") is None:
        return ""
    c = r.get("compile") or {}
    # a warm inductor cache (an earlier run on this machine) makes compilation look cheap: say so
    hit = c.get("fxgraph_cache_hits", 0) and not c.get("fxgraph_cache_misses", 0)
    return f"{r['compile_s']:.1f}" + (" (cached)" if hit else "")


def markdown_tables(doc, level: int = 2) -> str:
    meta, records = doc["meta"], doc["records"]
    device = meta.get("device")
    h = "#" * level
    peak_name = "CUDA peak MiB" if device == "cuda" else "RSS +MiB"
    head = ["res", "B", "backend", "median ms", "IQR", "split ms", "× ref", "× compile",
            "saved MiB", "saved ÷ ref", peak_name, "floor ms", "of floor", "compile s", "check"]
    groups = OrderedDict()
    for r in records:
        groups.setdefault((r["case"], r["mode"]), []).append(r)
    out = []
    for (case, mode), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r["res"], r["batch"], _order(r["backend"])))
        out.append(f"{h} {case} — {mode}\n")
        shapes = rs[0].get("shapes") or {}
        params = rs[0].get("params") or {}
        if params:
            out.append("params: " + ", ".join(f"{k}={v}" for k, v in params.items()) + "\n")
        if shapes:
            out.append(f"shapes at {rs[0]['res']}²: " + ", ".join(
                f"{k} {tuple(v)}" for k, v in shapes.items()) + "\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * len(head)) + "|")
        for r in rs:
            out.append("| " + " | ".join(_row(r, device)) + " |")
        out.append("")
    mx = doc.get("maxres") or []
    if mx:
        out.append(f"{h} Largest trainable resolution (teacher training step)\n")
        out.append("| backend | B | largest square crop | × reference (side) | × reference (pixels) | "
                   "CUDA peak GiB at it | step s at it | search ended |")
        out.append("|---|---|---|---|---|---|---|---|")
        for m in sorted(mx, key=lambda m: (m.get("batch", 0), _order(m.get("backend", "")),
                                           bool(m.get("recompute")))):
            name = m.get("backend", "") + (" + recompute" if m.get("recompute") else "")
            if m.get("status") != "ok":
                out.append(f"| {name} | {m.get('batch')} | **{m.get('status')}** "
                           f"{str(m.get('error', ''))[:60]} | | | | | |")
                continue
            pk, st = m.get("peak_bytes_at_max"), m.get("step_s_at_max")
            pk = "" if pk is None else f"{pk / 2 ** 30:.1f}"
            st = "" if st is None else f"{st:.2f}"
            out.append(f"| {name} | {m['batch']} | {m['max_res']}² | "
                       f"{_x(m.get('res_vs_reference'))} | {_x(m.get('pixels_vs_reference'))} | "
                       f"{pk} | {st} | {m.get('ended', '')} |")
        out.append("")
    return "\n".join(out)


def describe_run(meta) -> str:
    c = meta.get("ceilings") or {}
    lines = [
        f"- device: **{meta.get('device_name')}** ({meta.get('device')}); CPU: {meta.get('cpu_model')}, "
        f"{meta.get('threads')} torch threads of {meta.get('cpu_count')} logical CPUs",
        f"- date: {meta.get('date')}; suite `{meta.get('suite')}`, dtype {meta.get('dtype')}; "
        f"torch {meta.get('torch')}, triton {meta.get('triton')}, csakd_fast {meta.get('csakd_fast')} "
        f"(commit {meta.get('git_commit')})",
        f"- command: `{meta.get('command')}`; elapsed {meta.get('elapsed_s', 0):.0f} s; load average "
        f"(1/5/15 min) at start {meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}",
        "- backends available: " + ", ".join(f"{op}: {', '.join(bs) or '—'}"
                                              for op, bs in (meta.get("available_backends") or {}).items()),
    ]
    if c:
        lines.append(f"- ceilings measured in this run: copy bandwidth {c['bandwidth_Bps'] / 1e9:.1f} GB/s, "
                     f"matmul {c['matmul_flops'] / 1e12:.3g} TFLOP/s ({c['matmul_dtype']}, n={c['matmul_n']})")
    t = meta.get("timing") or {}
    if t:
        reps = t.get("reps") or [None, None]
        count = (f"{reps[0]} timed iterations per run" if reps[0] == reps[1] else
                 f"reps within {reps} aiming at {t.get('budget_s')} s per run")
        lines.append(f"- timing: {t.get('clock')}, {t.get('warmup')} warm-up iteration(s) (+1 compile "
                     f"for `compile`), {t.get('input_sets')} input sets rotated, {count}; median and IQR"
                     + ("; within a case the backends' timed iterations are interleaved (round r of "
                        "each, then round r + 1), `compile` timed apart"
                        if t.get("order") == "interleaved" else ""))
    opts = meta.get("options")
    if opts:
        lines.append("- options: " + ", ".join(f"--{k} {','.join(map(str, v))}" for k, v in opts.items()))
    lines.append("- saved MiB: bytes saved for backward by the forward (unique storages, parameters "
                 "and inputs excluded); " + (
                     "CUDA peak: torch.cuda.max_memory_allocated over one iteration"
                     if meta.get("device") == "cuda" else
                     "RSS +MiB: growth of the process's resident set during one iteration above its "
                     "start (VmHWM reset before it; in-process, so an increase, not an absolute peak)"))
    for n in meta.get("notes") or []:
        lines.append(f"- note: {n}")
    return "\n".join(lines) + "\n"


def markdown(doc) -> str:
    meta = doc["meta"]
    title = f"# csakd_fast benchmarks — {meta.get('device_name')}, {meta.get('dtype')}, suite {meta.get('suite')}\n"
    return title + "\n" + describe_run(meta) + "\n" + markdown_tables(doc, level=2)


# --- plots ---------------------------------------------------------------------------------------
def _plot_groups(records):
    groups = OrderedDict()
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault((r["case"], r["mode"], r["batch"]), []).append(r)
    return groups


def plot(doc, out: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    groups = _plot_groups(doc["records"])
    if not groups:
        return []
    device = doc["meta"].get("device")
    colors = {b: f"C{i}" for i, b in enumerate(BACKEND_ORDER)}
    n = len(groups)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    written = []
    for what in ("time", "memory"):
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
        for ax, ((case, mode, batch), rs) in zip(axes.flat, groups.items()):
            for b in sorted({r["backend"] for r in rs}, key=_order):
                pts = sorted((r for r in rs if r["backend"] == b), key=lambda r: r["res"])
                xs = [r["res"] for r in pts]
                c = colors.get(b, "k")
                if what == "time":
                    ys = [r["time"]["median_ms"] for r in pts]
                    lo = [y - r["time"]["p25_ms"] for y, r in zip(ys, pts)]
                    hi = [r["time"]["p75_ms"] - y for y, r in zip(ys, pts)]
                    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", color=c, label=b, capsize=3)
                else:
                    sv = [(r["res"], r.get("saved_bytes_activations")) for r in pts]
                    sv = [(x, y / MiB) for x, y in sv if y is not None]
                    key = "cuda_peak_bytes" if device == "cuda" else "rss_increase_bytes"
                    pk = [(r["res"], r.get(key)) for r in pts]
                    pk = [(x, y / MiB) for x, y in pk if y]
                    if sv:
                        ax.plot(*zip(*sv), marker="o", color=c, label=f"{b} saved")
                    if pk:
                        ax.plot(*zip(*pk), marker="x", ls="--", color=c,
                                label=f"{b} {'CUDA peak' if device == 'cuda' else 'RSS +'}")
            ax.set_title(f"{case} {mode}, B={batch}", fontsize=10)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            # plain labels, no minor labels: mathtext tick labels make savefig take seconds
            res = sorted({r["res"] for r in rs})
            ax.set_xticks(res)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            lo, hi = ax.get_ylim()
            # within one decade there is at most one major tick: label the minor ones too
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}") if hi / lo < 10
                                         else ticker.NullFormatter())
            if len(res) == 1:
                ax.set_xlim(res[0] / 1.5, res[0] * 1.5)
            ax.set_xlabel("HR resolution (side, px)")
            ax.set_ylabel("median ms" if what == "time" else "MiB")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        meta = doc["meta"]
        fig.suptitle(f"{what} vs resolution — {meta.get('device_name')}, {meta.get('dtype')}, "
                     f"{meta.get('date')}", fontsize=11)
        fig.tight_layout()
        path = Path(out) / f"{what}.png"
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(doc, out: Path, plots: bool = True, log=print) -> List[Path]:
    """results.md and (``plots``, where matplotlib is installed) time.png and memory.png."""
    out = Path(out)
    atomic_write_text(out / "results.md", markdown(doc))
    written = [out / "results.md"]
    if plots and importlib.util.find_spec("matplotlib") is None:
        log("benchmarks: matplotlib is not installed here: no plots (results.json and results.md "
            "have every number; `python -m benchmarks.report RESULTS_JSON` draws them elsewhere)")
    elif plots:
        written += plot(doc, out)
    return written


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def main(argv: Iterable[str] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    p.add_argument("json")
    p.add_argument("--out", default=None, help="default: the JSON's folder")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    doc = load(a.json)
    add_comparisons(doc["records"], doc.get("maxres") or [])
    for path in write_outputs(doc, Path(a.out or Path(a.json).parent), plots=not a.no_plots):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
