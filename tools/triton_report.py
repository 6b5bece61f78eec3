"""Compile the CLRA Triton kernel for sm_90 (no GPU needed) and keep its resource report in
kernels/TRITON_REPORT.md.

    python tools/triton_report.py              # compile every variant, rewrite the report, check
    python tools/triton_report.py --check      # compile and check; writes nothing
    python tools/triton_report.py --out FILE   # the report into FILE (with --check too)

A variant is an autotuning config × dtype × epilogue × grouped of ``_conv3x3_kernel``, compiled
ahead of time with Triton's bundled ptxas; its registers and stack frame come from the bundled
cuobjdump, its shared memory from Triton's metadata, and "wgmma" says whether its dot became a
Hopper warp-group MMA. Fails (exit 1) where a variant has a stack frame (register spills) or no
wgmma. The report has no timestamp, so an unchanged kernel and Triton rewrite the same file.
``make reports`` runs this; it needs TRITON_INTERPRET unset (the interpreter patches
triton.language when triton is imported), which the command line sees to.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "kernels" / "TRITON_REPORT.md"

if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported below
    sys.path.insert(0, str(ROOT))             # the source tree's csakd_fast, installed or not
import triton  # noqa: E402

from csakd_fast._platform import triton_interpreter  # noqa: E402
# the kernel and its constants
from csakd_fast.ops.clra.impl_triton import (EPI_ACC, EPI_LRELU, EPI_RES, EPI_RES2,  # noqa: E402
                                             EPI_STORE, RES, SLOPE, _conv3x3_kernel, _gpu_configs)

ARCH = 90
DTYPES = ("bf16", "fp32")
# the epilogues the block's forward (c1..c4, c5) and the Triton dgrad launch, by name
EPILOGUES = {EPI_LRELU: "LRELU", EPI_RES: "RES", EPI_RES2: "RES2", EPI_STORE: "STORE",
             EPI_ACC: "ACC"}
GROUPED = (False, True)
_INTS = ["H", "W", "cout", "cin_g", "cout_g", "sx_b", "sx_c", "so_b", "so_c", "sr_b", "sr_c",
         "sr2_b", "sr2_c"]


def _nvidia_bin(tool: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", tool)


def compile_report(arch: int = ARCH, dtypes=DTYPES, epilogues=tuple(EPILOGUES), grouped=GROUPED,
                   configs=None) -> List[dict]:
    """Compile :func:`_conv3x3_kernel` ahead of time for ``sm_<arch>`` (no GPU needed: Triton's
    bundled ptxas) and return, per variant, ptxas' registers, stack (spills) and shared memory.

    Run it in a process without ``TRITON_INTERPRET=1`` (the interpreter patches triton.language
    in place)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    if triton_interpreter():
        raise RuntimeError("compile_report: run it without TRITON_INTERPRET=1")
    cuobjdump = _nvidia_bin("cuobjdump")
    rows = []
    for cfg in (configs or _gpu_configs()):
        for dt in dtypes:
            for epi in epilogues:
                for grp in grouped:
                    sig = {n: "*" + dt for n in ("x_ptr", "w_ptr", "b_ptr", "out_ptr", "res_ptr",
                                                 "res2_ptr")}
                    sig.update({n: "i32" for n in _INTS})
                    consts = dict(EPILOGUE=epi, SLOPE_C=SLOPE, RES_C=RES, GROUPED=grp, IDX64=False,
                                  W_POW2=256, SPLIT_DX=dt != "fp32", INPUT_PRECISION="tf32",
                                  DOT_FP32=False, **cfg.kwargs)
                    sig.update({n: "constexpr" for n in consts})
                    # what a launch specialises on realistic shapes (W = 256, H·W planes):
                    # 16-aligned pointers, H, W and strides multiples of 16
                    names = list(sig)
                    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
                             if n.endswith("_ptr") or n in ("H", "W") or n.startswith("s")}
                    k = triton.compile(ASTSource(_conv3x3_kernel, sig, consts, attrs),
                                       target=GPUTarget("cuda", arch, 32),
                                       options={"num_warps": cfg.num_warps,
                                                "num_stages": cfg.num_stages})
                    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                        f.write(k.asm["cubin"])
                        f.flush()
                        usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                                               capture_output=True, text=True, check=True).stdout
                    line = next(ln for ln in usage.splitlines() if "REG:" in ln)
                    res = dict(kv.split(":", 1) for kv in line.split())
                    rows.append(dict(**cfg.kwargs, warps=cfg.num_warps, stages=cfg.num_stages,
                                     dtype=dt, epilogue=epi, grouped=grp, regs=int(res["REG"]),
                                     stack=int(res["STACK"]), shared=k.metadata.shared,
                                     wgmma="warp_group_dot" in k.asm["ttgir"]))
    return rows


def failures(rows) -> List[dict]:
    """The variants with a stack frame (spills) or without wgmma."""
    return [r for r in rows if r["stack"] or not r["wgmma"]]


def _describe(r) -> str:
    return (f"BLOCK {r['BLOCK_M']}×{r['BLOCK_N']}×{r['BLOCK_K']}, {r['warps']} warps, "
            f"{r['stages']} stages, {r['dtype']}, {EPILOGUES.get(r['epilogue'], r['epilogue'])}"
            f"{', grouped' if r['grouped'] else ''}")


def _ptxas_version() -> str:
    try:
        out = subprocess.run([_nvidia_bin("ptxas"), "--version"], capture_output=True, text=True,
                             check=True).stdout
        return out.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def report(rows, triton_version: str, ptxas_version: str, arch: int = ARCH) -> str:
    """The markdown report (rows in a fixed order, no timestamp)."""
    lines = [
        f"# Triton report of the CLRA conv kernel (sm_{arch})",
        "",
        "Written by `python tools/triton_report.py` (run by `make reports`); do not edit by hand.",
        f"Triton {triton_version}, its bundled ptxas ({ptxas_version}).",
        "",
        f"`_conv3x3_kernel` (the CLRA block's Triton backend), compiled ahead of time for sm_{arch}",
        "with the specialisations of a launch on realistic shapes: 16-byte-aligned pointers, H, W and",
        "strides multiples of 16, W_POW2 = 256, int32 offsets, TF32 dots for fp32. One row per",
        "autotuning config × dtype × epilogue × grouped: registers per thread and stack frame",
        "(cuobjdump), shared memory (Triton's metadata), whether the dot is a wgmma. Epilogues: LRELU",
        "(c1..c4), RES (c5 of dense blocks 1, 2), RES2 (c5 of dense block 3), ACC (the Triton dgrad,",
        "accumulating). A stack frame or a dot without wgmma fails the script.",
        "",
        "| BLOCK_M | BLOCK_N | BLOCK_K | warps | stages | dtype | epilogue | grouped | registers "
        "| stack (B) | shared (B) | wgmma |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    key = lambda r: (r["BLOCK_M"], r["BLOCK_N"], r["BLOCK_K"], r["warps"], r["stages"],  # noqa: E731
                     r["dtype"], r["epilogue"], r["grouped"])
    for r in sorted(rows, key=key):
        lines.append(f"| {r['BLOCK_M']} | {r['BLOCK_N']} | {r['BLOCK_K']} | {r['warps']} | "
                     f"{r['stages']} | {r['dtype']} | {EPILOGUES.get(r['epilogue'], r['epilogue'])} | "
                     f"{'yes' if r['grouped'] else 'no'} | {r['regs']} | {r['stack']} | "
                     f"{r['shared']} | {'yes' if r['wgmma'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="compile and check only: no report is written unless --out is given")
    p.add_argument("--out", default=None, help=f"where the report goes (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    rows = compile_report()
    bad = failures(rows)
    for r in bad:
        print(f"triton_report: {_describe(r)}: {r['stack']} B stack frame, "
              f"{'wgmma' if r['wgmma'] else 'no wgmma'}", file=sys.stderr)
    out = a.out or (None if a.check else str(DEFAULT_OUT))
    if out:
        Path(out).write_text(report(rows, triton.__version__, _ptxas_version()))
    print(f"triton_report: {len(rows)} variants compiled for sm_{ARCH}, {len(bad)} failing"
          + (f", report in {out}" if out else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
