"""The build and report tooling (setup.py, CMakeLists.txt, tools/): a failed native build, the
source lists, the ptxas log parser, the Triton sm_90 compile report.

None needs a GPU: the Triton kernel is compiled ahead of time with Triton's bundled ptxas, the
ptxas parser reads a canned log.
"""
import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not importable")


def _setup_list(name: str):
    """A list literal of setup.py (CPU_SOURCES, CUDA_SOURCES), read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(name)


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "tools"))  # ptxas_report imports its sibling cuda_toolkit
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return mod


# --- setup.py -------------------------------------------------------------------------------------
def test_a_failed_build_leaves_the_package_installable(tmp_path):
    """setup.py's build_ext on a broken source: one warning line, exit status 0."""
    src = tmp_path / "src"
    src.mkdir()
    for f in ("setup.py", "README.md"):
        (src / f).write_text((ROOT / f).read_text())
    (src / "tools").mkdir()
    (src / "tools" / "cuda_toolkit.py").write_text((ROOT / "tools" / "cuda_toolkit.py").read_text())
    (src / "csakd_fast").mkdir()
    (src / "csakd_fast" / "__init__.py").write_text('__version__ = "0.0.0"\n')
    sources = _setup_list("CPU_SOURCES")
    assert "csrc/module.cpp" in sources and any(s.startswith("csrc/csa/") for s in sources), sources
    for name in sources:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("#error deliberately broken\n")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=src,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "CSAKD_BUILD_CUDA": "0"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "native extension not built" in ln]
    assert len(lines) == 1 and "the cpp/cuda backends are off" in lines[0], r.stderr
    assert not list((src / "csakd_fast").glob("_C*"))


def test_setup_and_cmake_list_the_same_native_sources():
    """Every source setup.py compiles exists, CMakeLists.txt lists the same ones, and every
    translation unit under csrc/ and kernels/ is in the lists (none is left out of a build)."""
    cpu, cuda = _setup_list("CPU_SOURCES"), _setup_list("CUDA_SOURCES")
    for s in cpu + cuda:
        assert (ROOT / s).is_file(), s
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for s in cpu + cuda:
        assert s in cmake, f"{s} is not in CMakeLists.txt"
    on_disk = {p.relative_to(ROOT).as_posix() for d in ("csrc", "kernels")
               for ext in ("*.cpp", "*.cu") for p in (ROOT / d).glob(f"**/{ext}")}
    assert on_disk == set(cpu + cuda), on_disk ^ set(cpu + cuda)


# --- tools/ptxas_report.py ------------------------------------------------------------------------
PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN5csakd4cuda44_GLOBAL__N__80323dc9_11_csa_cuda_cu_9bce266810pad_kernelEPKfPfliib' for 'sm_90'
ptxas info    : Function properties for _ZN5csakd4cuda44_GLOBAL__N__80323dc9_11_csa_cuda_cu_9bce266810pad_kernelEPKfPfliib
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers, 384 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN5csakd4cuda49_GLOBAL__N__1f2e3d4c_16_csa_cuda_gram_cu_5a6b7c8d11gram_kernelIfLb0EEEvPKT_S5_PKfS7_PfS8_S8_illilii' for 'sm_90'
ptxas info    : Function properties for _ZN5csakd4cuda49_GLOBAL__N__1f2e3d4c_16_csa_cuda_gram_cu_5a6b7c8d11gram_kernelIfLb0EEEvPKT_S5_PKfS7_PfS8_S8_illilii
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 17408 bytes smem, 456 bytes cmem[0]
"""


def test_ptxas_report_parses_a_ptxas_log():
    pr = _load_tool("ptxas_report")
    rows = pr.parse(PTXAS_LOG)
    assert [r["arch"] for r in rows] == ["sm_90", "sm_90"]
    pad, gram = rows
    assert (pad["registers"], pad["smem"], pad["stack"], pad["spill_stores"], pad["spill_loads"],
            pad["barriers"]) == (30, 0, 0, 0, 0, 0)
    assert (gram["registers"], gram["smem"], gram["stack"], gram["spill_stores"],
            gram["spill_loads"], gram["barriers"]) == (64, 17408, 8, 4, 12, 1)
    assert [r["kernel"] for r in pr.failures(rows)] == [gram["kernel"]]
    text = pr.report(rows, "Build cuda_x.y")
    assert text == pr.report(list(reversed(rows)), "Build cuda_x.y")  # sorted: the same bytes
    assert "Compiler: Build cuda_x.y." in text
    if pr.demangle(["_Z1fv"]) != ["_Z1fv"]:  # a demangler is there: short readable names
        assert (pad["kernel"], gram["kernel"]) == ("pad_kernel", "gram_kernel<float, false>")
        assert "| `pad_kernel` | 30 | 0 | 0 | 0 | 0 |" in text
        assert "| `gram_kernel<float, false>` | 64 | 17408 | 8 | 4 | 12 |" in text


# --- tools/triton_report.py -----------------------------------------------------------------------
@needs_triton
def test_triton_report_is_stable_and_flags_spills():
    """report() without compiling: rows sorted (the same bytes whatever the order), no timestamp;
    failures() flags a stack frame and a dot without wgmma."""
    tr = _load_tool("triton_report")
    base = dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, warps=8, stages=3, dtype="bf16",
                epilogue=tr.EPI_LRELU, grouped=False, regs=100, stack=0, shared=28672, wgmma=True)
    rows = [base, {**base, "grouped": True, "stack": 16}, {**base, "dtype": "fp32", "wgmma": False},
            {**base, "epilogue": tr.EPI_ACC}]
    text = tr.report(rows, "3.x", "ptxas x")
    assert text == tr.report(rows[::-1], "3.x", "ptxas x")
    assert "| 128 | 64 | 32 | 8 | 3 | bf16 | LRELU | no | 100 | 0 | 28672 | yes |" in text
    assert "| 128 | 64 | 32 | 8 | 3 | bf16 | ACC | no | 100 | 0 | 28672 | yes |" in text
    assert [(r["stack"], r["wgmma"]) for r in tr.failures(rows)] == [(16, True), (0, False)]


@needs_triton
@pytest.mark.skipif(CUDA, reason="checked on the GPU by tests/test_op_clra.py")
def test_triton_kernel_compiles_for_sm90():
    """ptxas (bundled with Triton) compiles the CLRA kernel for sm_90: wgmma, no spills, for the
    variants the kernel is launched with (plain and grouped, bf16 and fp32, each epilogue)."""
    code = ("import sys\n"
            f"sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
            "import triton_report as tr\n"
            "c = tr._gpu_configs()\n"
            "rows = tr.compile_report(configs=[c[0], c[4]], dtypes=('bf16',), epilogues=(2,), "
            "grouped=(False,)) + tr.compile_report(configs=[c[1]], dtypes=('fp32', 'bf16'), "
            "epilogues=(1,), grouped=(True,)) + tr.compile_report(configs=[c[0]], "
            "dtypes=('bf16',), epilogues=(tr.EPI_ACC,), grouped=(True,))\n"
            "print(rows)\n"
            "assert len(rows) == 5, rows\n"
            "assert all(r['stack'] == 0 and r['wgmma'] for r in rows), rows\n"
            "assert tr.failures(rows) == [], rows\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
