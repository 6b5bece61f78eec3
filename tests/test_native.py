"""What is particular to the native backends (csrc/, kernels/; csakd_fast/ops/csa/impl_native.py).

The shared correctness suite (forward and every gradient against the float64 reference, every
mode, awkward shapes, poisoned outputs, opcheck, gradcheck) runs them in tests/test_op_csa.py.
Here: shapes that span many tiles, items and threads; both CPU builds (AVX2 and the baseline);
bitwise reproducibility; argument checks before a pointer reaches C++; the fallback when the
extension is missing; the model with the cpp backend.

``CSAKD_REQUIRE_NATIVE=1`` (set by ``make test`` where a C++ compiler is present) turns a missing
extension from a skip into a failure, so CI cannot pass without testing it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import csakd_fast as cf
from conftest import csa_layer
from csakd_fast import _native, backends

ROOT = Path(__file__).resolve().parents[1]
LIB = _native.lib()
REQUIRED = os.environ.get("CSAKD_REQUIRE_NATIVE") == "1"
WHY = _native.why or "the extension was built without CUDA kernels"

needs_cpp = pytest.mark.skipif(LIB is None and not REQUIRED, reason=f"native extension: {_native.why}")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and LIB is not None and LIB.HAS_CUDA),
    reason="the cuda backend needs a CUDA GPU and the extension built with its kernels "
           f"({'no GPU' if not torch.cuda.is_available() else WHY})")


def test_extension_is_built_where_required():
    """make test sets CSAKD_REQUIRE_NATIVE=1 when a compiler is there: the build must not have
    silently degraded."""
    if not REQUIRED:
        pytest.skip("CSAKD_REQUIRE_NATIVE is not set")
    assert LIB is not None, _native.why
    assert "cpp" in backends.available("csa", "cpu"), backends.explain("csa", "cpu")["cpp"]


# --- many tiles, items, threads ------------------------------------------------------------------
def _inputs(B, C, H, W, up1, up3, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return [r(B, C, H // up1, W // up1), r(B, C, H, W), r(B, C, H // up3, W // up3), r(B, C, H, W)]


_layer = csa_layer


def _fwd_bwd(layer, xs, up1, up3, seed=1):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    out = layer(*xs, up1=up1, up3=up3)
    # drawn in float64 and rounded: the same output gradient for every dtype
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dout = dout.to(out.device, out.dtype)
    grads = torch.autograd.grad(out, xs + list(layer.parameters()), dout)
    return [out.detach()] + list(grads)


# widths that leave a ragged last tile (W/S > the 64-pixel tile at S = 4; N not a multiple of
# 256 at S = 1), several coarse rows and therefore several reduction items per sample
BIG = {
    "up4": dict(B=2, C=21, H=24, W=280, up1=4, up3=4),
    "up1": dict(B=2, C=19, H=45, W=61, up1=1, up3=1),
    "up1x4": dict(B=1, C=9, H=36, W=300, up1=1, up3=4),
    "up4x1": dict(B=1, C=9, H=36, W=300, up1=4, up3=1),
}


@needs_cpp
@pytest.mark.parametrize("attention", ["paper", "normalized", "legacy"])
@pytest.mark.parametrize("case", list(BIG))
def test_many_tiles_and_threads_match_the_torch_backend_float64(case, attention):
    """float64, 3 threads, against the torch backend (itself checked against the reference):
    every tile, item and thread boundary of the C++ passes, 1e-10."""
    k = BIG[case]
    xs = _inputs(k["B"], k["C"], k["H"], k["W"], k["up1"], k["up3"], torch.float64)
    want = _fwd_bwd(_layer(k["C"], 12, 3, True, attention, "torch", torch.float64), xs, k["up1"], k["up3"])
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        got = _fwd_bwd(_layer(k["C"], 12, 3, True, attention, "cpp", torch.float64), xs, k["up1"], k["up3"])
    finally:
        torch.set_num_threads(threads)
    for i, (a, b) in enumerate(zip(got, want)):
        scale = max(b.abs().max().item(), 1e-3)
        assert (a - b).abs().max().item() <= 1e-10 * scale, f"output {i}"


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_both_cpu_builds_agree_with_the_reference(dtype, monkeypatch):
    """The x86-64 baseline build (selected by hand here) and the AVX2 build (where the CPU has it)
    on the same inputs, against the eager reference."""
    isas = LIB.cpu_isas()
    assert "base" in isas
    xs = _inputs(2, 13, 16, 24, 4, 4, torch.float64)
    want = _fwd_bwd(_layer(13, 8, 2, True, "normalized", "reference", torch.float64), xs, 4, 4)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    default = LIB.cpu_isa()
    try:
        for isa in isas:
            LIB.set_cpu_isa(isa)
            got = _fwd_bwd(_layer(13, 8, 2, True, "normalized", "cpp", dtype), [x.to(dtype) for x in xs], 4, 4)
            for i, (a, b) in enumerate(zip(got, want)):
                scale = max(b.abs().max().item(), 1e-3)
                assert (a.double() - b).abs().max().item() <= tol * scale, f"{isa}: output {i}"
    finally:
        LIB.set_cpu_isa(default)
    with pytest.raises(ValueError, match="isa: expected 'base' or 'avx2'"):
        LIB.set_cpu_isa("neon")


@needs_cpp
@pytest.mark.parametrize("attention", ["paper", "normalized"])
def test_bitwise_reproducible_runs(attention):
    """Fixed reduction order: two runs of forward and backward are bitwise equal (on 3 threads,
    and on 1)."""
    k = BIG["up4"]
    xs = _inputs(k["B"], k["C"], k["H"], k["W"], 4, 4, torch.float32)
    layer = _layer(k["C"], 12, 3, True, attention, "cpp", torch.float32)
    threads = torch.get_num_threads()
    try:
        for n in (3, 1):
            torch.set_num_threads(n)
            first, second = _fwd_bwd(layer, xs, 4, 4), _fwd_bwd(layer, xs, 4, 4)
            for i, (a, b) in enumerate(zip(first, second)):
                assert torch.equal(a, b), f"{n} threads: output {i} differs between runs"
    finally:
        torch.set_num_threads(threads)


@needs_cpp
def test_the_cpp_passes_do_not_depend_on_the_thread_count():
    """Each pass alone (pass 1 with every statistic, the forward, both backward passes) gives the
    same bits on 1, 2 and 3 threads: the partial sums belong to fixed tile ranges, not threads.
    (The small torch algebra between the passes may round differently with another thread count.)"""
    from csakd_fast.ops.csa import impl_cpp

    N = impl_cpp.NATIVE
    B, C, H, W, S = 2, 21, 24, 280, 4
    g = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x1, x3, x2, x4, dout = r(B, C, H // S, W // S), r(B, C, H // S, W // S), r(B, C, H, W), r(B, C, H, W), r(B, C, H, W)
    M, c, wg, bg, m = r(B, C, C) / C, r(B, C), r(4, 4 * C) / C, r(4), r(B, C)

    def passes():
        e = lambda *s: torch.empty(*s)  # noqa: E731
        out = [e(B, C, C), e(B, C), e(B, C), e(B, C, C), e(B, C, C), e(B, C, C), e(B, C, H, W),
               e(B, C, H // S, W // S), e(B, C, H, W), e(B, C, H // S, W // S), e(B, C, H, W),
               e(B, C, H // S, W // S), e(B, C, C), e(B, C), e(4, 4 * C), e(4)]
        G, s1, s2, Gc, G11, G22, y, dx1, dx2, dx3, dx4, px2, dM, dc, dwg, dbg = out
        N.pass1(x1, x2, None, None, G, s1, s2, None, None, S)
        N.pass1(x1, x2, m, m, Gc, None, None, G11, G22, S)
        N.apply(x1, x2, x3, x4, M, c, wg, bg, y, S)
        N.backward1(True, x1, x2, x3, x4, dout, M, c, wg, bg, dx1, dx2, dx3, dx4, px2, dM, dc, dwg, dbg, S)
        N.backward2(True, x1, x2, px2, M, M, M, c, c, dx1, dx2, S)
        return out

    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(passes())
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for i, (a, b) in enumerate(zip(runs[0], other)):
            assert torch.equal(a, b), f"buffer {i} depends on the thread count"


@needs_cpp
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_one_openmp_runtime_in_the_process():
    """Built with OpenMP, the module must share torch's OpenMP runtime (one libgomp mapped), or
    the two thread pools would compete for the cores between the passes and torch's ops."""
    if not LIB.OPENMP:
        pytest.skip("built without OpenMP (std::thread workers)")
    maps = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
            if "libgomp" in line or "libiomp" in line}
    assert len(maps) == 1, maps


# --- argument checks ------------------------------------------------------------------------------
@needs_cpp
def test_every_pointer_argument_is_checked_before_the_call():
    """Wrong shape, dtype, device or layout of any buffer: ValueError naming it, nothing called."""
    from csakd_fast.ops.csa import impl_cpp

    N = impl_cpp.NATIVE
    B, C, H, W, S = 2, 5, 8, 12, 4
    x1, x2 = torch.randn(B, C, H // S, W // S), torch.randn(B, C, H, W)
    G, s1, s2 = torch.empty(B, C, C), torch.empty(B, C), torch.empty(B, C)
    N.pass1(x1, x2, None, None, G, s1, s2, None, None, S)   # the valid call works
    torch.testing.assert_close(s1, x1.sum((2, 3)))
    bad = {
        "x1": dict(x1=torch.randn(B, C, H, W)),
        "G11": dict(G11=torch.empty(B, C, C, dtype=torch.float64)),
        "G": dict(G=torch.empty(B, C, C + 1)),
        "s2": dict(s2=torch.empty(B, 2 * C)[:, ::2]),
        "s1": dict(s1=[0.0] * C),
    }
    why = {"x1": "expected shape", "G11": "expected dtype", "G": "expected shape",
           "s2": "expected a contiguous tensor", "s1": "expected a torch.Tensor"}
    for name, change in bad.items():
        args = dict(x1=x1, x2=x2, m1=None, m2=None, G=G, s1=s1, s2=s2, G11=None, G22=None)
        args.update(change)
        with pytest.raises(ValueError, match=f"^{name}: {why[name]}"):
            N.pass1(*args.values(), S)
    with pytest.raises(ValueError, match="^x2: expected a height and width divisible by the factor 5"):
        N.pass1(torch.randn(B, C, 1, 2), x2, None, None, G, s1, s2, None, None, 5)
    out = torch.empty(B, C, H, W)
    with pytest.raises(ValueError, match="^M: expected shape"):
        N.apply(x1, x2, x1, x2, torch.empty(B, C, C - 1), torch.empty(B, C), None, None, out, S)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="^out: expected device cpu"):
            N.apply(x1, x2, x1, x2, torch.empty(B, C, C), torch.empty(B, C), None, None,
                    out.cuda(), S)


@needs_cpp
def test_the_op_refuses_tensors_of_another_device_or_dtype():
    """The cpp implementation declares cpu and float32/float64; the op checks that declaration
    before a pointer reaches C++ (meta tensors never reach it: the op's fake kernel runs)."""
    from csakd_fast.ops.csa import op

    impl = backends.get("csa", "cpp")
    assert impl.why_not(torch.device("meta"), torch.float32) == \
        "the cpp backend of csa runs on cpu tensors, got meta"
    x = torch.empty(1, 2, 2, 2, dtype=torch.float16)
    w = [torch.zeros(2, 2, dtype=torch.float16), torch.zeros(2, dtype=torch.float16)] * 4
    with pytest.raises(ValueError, match="x2: the cpp backend of csa takes float32, float64, got torch.float16"):
        op.csa_fwd(x, x, x, x, *w, None, None, None, 1, "paper", 1, 1, "cpp")


# --- the fallback ---------------------------------------------------------------------------------
def test_a_missing_extension_is_one_warning_and_the_python_backends_run():
    """A fresh interpreter where ``csakd_fast._C`` cannot be imported (as after a failed build):
    ``import csakd_fast`` works, "auto" falls back to torch on the CPU, asking for "cpp" is a
    ValueError that gives the reason, and the warning is printed once."""
    code = r"""
import sys, warnings
sys.modules["csakd_fast._C"] = None           # makes `import csakd_fast._C` raise ImportError
import torch, csakd_fast as cf
from csakd_fast import backends
assert backends.resolve("csa", "auto", torch.device("cpu")) == "torch"
try:
    backends.resolve("csa", "cpp", torch.device("cpu"))
except ValueError as e:
    print("ERROR:", e)
layer = cf.nn.CrossSelfAttention(6, 4, 2)
x = [torch.randn(1, 6, 4, 4) for _ in range(4)]
layer(*x); layer(*x)
print("OK", "cpp" in backends.available("csa", "cpu"))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONWARNINGS": "default"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "OK False" in r.stdout
    assert "ERROR: backend: 'cpp' cannot run 'csa' on cpu" in r.stdout
    assert "csakd_fast._C is unavailable" in r.stdout
    warns = [ln for ln in r.stderr.splitlines() if "RuntimeWarning" in ln]
    assert len(warns) == 1 and "the cpp/cuda backends are off" in warns[0], r.stderr


# --- the model ------------------------------------------------------------------------------------
@needs_cpp
def test_model_with_the_cpp_backend_matches_the_reference():
    """CSAKDNet(backend={"csa": "cpp"}) (the CLRA blocks on "auto") against the reference model,
    float32, output, fused map and every parameter gradient at 1e-5."""
    from conftest import small

    cfg = small("student", attention="paper", layers=(1, 1, 1, 1))
    torch.manual_seed(0)
    ref = cf.CSAKDNet(cfg, backend="reference")
    model = cf.CSAKDNet(cfg, backend={"csa": "cpp"})
    model.load_state_dict(ref.state_dict())
    lr, msi = torch.randn(2, 31, 3, 5), torch.randn(2, 3, 12, 20)
    outs = []
    for m in (ref, model):
        out, fused = m(lr, msi)
        (out.square().mean() + fused.sum()).backward()
        outs.append((out.detach(), fused.detach(), {n: p.grad for n, p in m.named_parameters()
                                                    if p.grad is not None}))
    (ro, rf, rg), (mo, mf, mg) = outs
    for what, a, b in [("out", mo, ro), ("fused", mf, rf)] + [(n, mg[n], rg[n]) for n in rg]:
        scale = max(b.abs().max().item(), 1e-3)
        assert (a - b).abs().max().item() <= 1e-5 * scale, what


# --- cuda -----------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("attention", ["paper", "normalized", "legacy"])
def test_cuda_matches_the_cpp_backend_on_a_model_sized_input(attention):
    """C = 86, 64², x1/x3 at ×4, float32: the CUDA passes against the C++ passes (both checked
    against the reference on small shapes in tests/test_op_csa.py)."""
    xs = _inputs(2, 86, 64, 64, 4, 4, torch.float32)
    want = _fwd_bwd(_layer(86, 64, 4, True, attention, "cpp", torch.float32), xs, 4, 4)
    layer = _layer(86, 64, 4, True, attention, "cuda", torch.float32).cuda()
    got = _fwd_bwd(layer, [x.cuda() for x in xs], 4, 4)
    for i, (a, b) in enumerate(zip(got, want)):
        scale = max(b.abs().max().item(), 1e-3)
        assert (a.cpu() - b).abs().max().item() <= 1e-4 * scale, f"output {i}"


@needs_cuda
def test_cuda_is_bitwise_reproducible():
    xs = [x.cuda() for x in _inputs(2, 86, 64, 64, 4, 4, torch.bfloat16)]
    layer = _layer(86, 64, 4, True, "paper", "cuda", torch.bfloat16).cuda()
    a, b = _fwd_bwd(layer, xs, 4, 4), _fwd_bwd(layer, xs, 4, 4)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"output {i}"

