"""Compile kernels/ for sm_90 (compile only) and keep ptxas's resource report in PTXAS_REPORT.md.

    python tools/ptxas_report.py                  # compile, rewrite kernels/PTXAS_REPORT.md, check
    python tools/ptxas_report.py --check          # compile and check; writes no tracked file
    python tools/ptxas_report.py --check --log F  # ... and ptxas's log into F
    python tools/ptxas_report.py --if-nvcc ...    # a machine without nvcc only says so

Fails (exit 1) on a compile error, and on any kernel with a stack frame or spill traffic: every
kernel here is on the hot path of a pass, and local memory there is a defect to fix (a register
cap, a smaller per-thread array), not a number to report. The report has no timestamp, so an
unchanged kernel and compiler rewrite the same file. ``make test`` runs the check (its log goes
to build/), ``make reports`` rewrites the report.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cuda_toolkit import find_nvcc

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
DEFAULT_OUT = KERNELS / "PTXAS_REPORT.md"
# every translation unit under kernels/ (kernels/<op>/*.cu)
SOURCES = sorted(p.relative_to(ROOT).as_posix() for p in KERNELS.glob("**/*.cu"))
ARCH = "sm_90"
FLAGS = ["-O3", "-std=c++17", "-lineinfo", f"-arch={ARCH}", "-Xptxas", "-v"]


def demangle(names):
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines() if out else names


def parse(log: str):
    """[{kernel, registers, smem, stack, spill_stores, spill_loads, barriers}] from ptxas -v."""
    rows, cur = [], None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
        if m:
            cur = {"mangled": m.group(1), "arch": m.group(2), "registers": 0, "smem": 0, "stack": 0,
                   "spill_stores": 0, "spill_loads": 0, "barriers": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
            b = re.search(r"used (\d+) barriers", line)
            s = re.search(r"(\d+) bytes smem", line)
            cur["barriers"] = int(b.group(1)) if b else 0
            cur["smem"] = int(s.group(1)) if s else 0
    for row, name in zip(rows, demangle([r["mangled"] for r in rows])):
        row["kernel"] = _short(name)
    return rows


def _short(name: str) -> str:
    """'void csakd::cuda::(anonymous namespace)::fwd_kernel<__half, true>(...)' -> 'fwd_kernel<__half, true>'."""
    name = re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))
    return name.split("::")[-1].replace("void ", "").strip()


def report(rows, nvcc_version: str) -> str:
    lines = [
        "# ptxas report of kernels/ (sm_90)",
        "",
        "Written by `python tools/ptxas_report.py` (run by `make reports`); do not edit by hand.",
        f"Compiler: {nvcc_version}. Flags: `{' '.join(FLAGS)}`.",
        "",
        "Registers per thread, static shared memory, stack frame and spill traffic per kernel, as",
        "ptxas reports them. The apply kernels also take dynamic shared memory, sized at launch from",
        "C and the tile (see `FwdSmem`, `Bwd1Smem`, `Bwd2Smem` in kernels/csa/). A stack frame or spill",
        "in any kernel fails the script.",
        "",
        "| kernel | registers | static smem (B) | stack (B) | spill stores (B) | spill loads (B) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: r["kernel"]):
        lines.append(f"| `{r['kernel']}` | {r['registers']} | {r['smem']} | {r['stack']} | "
                     f"{r['spill_stores']} | {r['spill_loads']} |")
    return "\n".join(lines) + "\n"


def compile_all(nvcc: str):
    """(rows, log) of every translation unit compiled for ARCH; rows is None on a compile error."""
    rows, logs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for src in SOURCES:
            cmd = [nvcc, *FLAGS, "-c", str(ROOT / src), "-o", str(Path(tmp) / (Path(src).name + ".o"))]
            r = subprocess.run(cmd, capture_output=True, text=True)
            logs.append(f"$ nvcc ... {src}\n{r.stdout}{r.stderr}")
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
                print(f"ptxas_report: {src} does not compile for {ARCH}", file=sys.stderr)
                return None, "\n".join(logs)
            rows += parse(r.stdout + r.stderr)
    return rows, "\n".join(logs)


def failures(rows):
    """The kernels with a stack frame or spill traffic."""
    return [r for r in rows if r["stack"] or r["spill_stores"] or r["spill_loads"]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--if-nvcc", action="store_true", help="succeed with a note where nvcc is missing")
    p.add_argument("--check", action="store_true",
                   help="compile and check only: no report is written unless --out is given")
    p.add_argument("--out", default=None, help=f"where the report goes (default {DEFAULT_OUT})")
    p.add_argument("--log", default=None, help="write ptxas's output (every translation unit) here")
    a = p.parse_args(argv)
    nvcc = find_nvcc()
    if nvcc is None:
        print("ptxas_report: no nvcc here: the CUDA kernels were not compiled", file=sys.stderr)
        return 0 if a.if_nvcc else 1
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    rows, log = compile_all(nvcc)
    if a.log:
        Path(a.log).parent.mkdir(parents=True, exist_ok=True)
        Path(a.log).write_text(log)
    if rows is None:
        return 1
    if not rows:
        print("ptxas_report: no kernel in the ptxas output:\n" + log, file=sys.stderr)
        return 1
    text = report(rows, version)
    out = a.out or (None if a.check else str(DEFAULT_OUT))
    if out:
        Path(out).write_text(text)
    elif DEFAULT_OUT.exists() and DEFAULT_OUT.read_text() != text:
        print(f"ptxas_report: note: {DEFAULT_OUT.relative_to(ROOT)} differs from this build "
              "(another compiler, or a changed kernel: `make reports` rewrites it)")
    bad = failures(rows)
    for r in bad:
        print(f"ptxas_report: {r['kernel']}: {r['stack']} B stack frame, {r['spill_stores']} B spill "
              f"stores, {r['spill_loads']} B spill loads", file=sys.stderr)
    print(f"ptxas_report: {len(rows)} kernels compiled for {ARCH}, {len(bad)} with stack or spills"
          + (f", report in {out}" if out else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
