"""The fused CSA (csakd_fast/ops/csa/: the csakd_fast::csa_fwd / csa_bwd op; backends "torch",
"triton", "cpp", "cuda") against the eager float64 reference.

Tolerances, per dtype of the fused run (error = max |got − ref| over a tensor, divided by
max(max |ref|, 1e-3); the floor only matters for gradients that are zero in exact arithmetic —
legacy q/k, normalized q/k biases, ungated legacy x1/x2 — where the reference carries 1e-17 to 1e-13
rounding noise and the fused backends return exact zeros):

    float64 (torch, cpp)                1e-10
    float32 (torch, triton interpreter, cpp, cuda) 1e-5
    float16 / bfloat16 (CUDA only, tests/test_op_csa.py::test_half_precision_cuda)
                                        2e-2 / 6e-2 (TF32 dots, half-precision inputs/outputs)

Triton runs under TRITON_INTERPRET=1 on GPU-less machines (tests/conftest.py), on small shapes.
"cpp" runs wherever the native extension is built (tests/test_native.py covers what is particular to
it); "cuda" needs a CUDA GPU and the extension built with its kernels, and is skipped otherwise.
"""
import functools

import pytest
import torch

import csakd_fast as cf
from conftest import csa_layer
from csakd_fast import backends
from csakd_fast.memory import saved_bytes
from csakd_fast.ops.csa import op as csa_op

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 6e-2}
ATTENTIONS = ("paper", "legacy", "normalized")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
NATIVE_DEV = {"cpp": "cpu", "cuda": "cuda"}


def _dev(backend):
    """The device a backend's tests run on: cpp on the CPU, cuda on the GPU, others on DEV."""
    return NATIVE_DEV.get(backend, DEV)


# the fused backends that can run here; tests of the others skip with the reason
FUSED = tuple(b for b in ("torch", "triton", "cpp", "cuda")
              if b in backends.available("csa", _dev(b)))

# C = 86 (the paper's nf) and non-powers of two; odd H, W and odd LR sizes; batch 1 and 3; pixel
# counts that are no multiple of any block; nearest factors 1, 2, 4 and mixed (4 with 2: the gcd path).
CASES = {
    "c86-b1-up4": dict(B=1, C=86, H=12, W=20, up1=4, up3=4, heads=4, D=64),
    "c13-b3-odd": dict(B=3, C=13, H=7, W=9, up1=1, up3=1, heads=2, D=6),
    "c20-b3-up1x2": dict(B=3, C=20, H=10, W=6, up1=1, up3=2, heads=3, D=9),
    "c24-b1-up4x2": dict(B=1, C=24, H=12, W=8, up1=4, up3=2, heads=2, D=16),
}
RUNS = [("torch", torch.float64), ("torch", torch.float32), ("triton", torch.float32),
        ("cpp", torch.float64), ("cpp", torch.float32), ("cuda", torch.float32)]
INTERPRETED = not torch.cuda.is_available()


def _skip_unless_runs(backend):
    """Skips a test of ``backend`` where it cannot run, with the reason."""
    if backend not in FUSED:
        if _dev(backend) == "cuda" and not torch.cuda.is_available():
            pytest.skip(f"backend {backend!r} needs a CUDA GPU")
        why = backends.explain("csa", _dev(backend))[backend]
        pytest.skip(f"backend {backend!r} cannot run here: {why}")


def _poisoning(device) -> bool:
    return bool(torch.isnan(torch.empty(8, device=device)).all())


@pytest.fixture
def strict(monkeypatch):
    """For Triton runs: interpreter tiles of 16 pixels (the tiny shapes here then span several
    tiles and several split-N programs, so the loops, masks and partial sums are exercised). For
    every backend: every uninitialised allocation (``torch.empty`` & co.: the outputs, partial
    sums and workspaces the kernels write) comes filled with NaN
    (``torch.utils.deterministic.fill_uninitialized_memory``), so that an element a kernel fails
    to write shows up. Yields a check that the poisoning is on for a device."""
    import torch.utils.deterministic as det

    if "triton" in FUSED and INTERPRETED:
        from csakd_fast.ops.csa import impl_triton

        monkeypatch.setitem(impl_triton.INTERPRETER, "BLOCK_P", 16)
        monkeypatch.setitem(impl_triton.INTERPRETER, "BLOCK_L", 16)
    old = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield _poisoning
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        det.fill_uninitialized_memory = old[2]


def _triton_subset(case, attention, gate):
    """Under the interpreter (slow) Triton runs every mode and gate on the C = 86 and the odd
    batch-3 cases, and the two mixed-factor cases gated in paper and legacy mode and ungated in
    normalized mode (each store branch of the kernels runs in at least two of these)."""
    if not INTERPRETED or case in ("c86-b1-up4", "c13-b3-odd"):
        return True
    return (attention, gate) in (("paper", True), ("normalized", False), ("legacy", True))


_layer = csa_layer


@functools.lru_cache(maxsize=None)
def _reference(case, attention, gate):
    """(state_dict, inputs, dout, out, grads) of the float64 reference."""
    k = CASES[case]
    B, C, H, W, up1, up3 = (k[n] for n in ("B", "C", "H", "W", "up1", "up3"))
    layer = _layer(C, k["D"], k["heads"], gate, attention, "reference")
    gen = torch.Generator().manual_seed(1)
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    xs = [rnd(B, C, H // up1, W // up1), rnd(B, C, H, W), rnd(B, C, H // up3, W // up3), rnd(B, C, H, W)]
    xs = [x.requires_grad_() for x in xs]
    out = layer(*xs, up1=up1, up3=up3)
    dout = rnd(*out.shape)
    names = ["x1", "x2", "x3", "x4"] + [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(out, xs + list(layer.parameters()), dout)
    return layer.state_dict(), [x.detach() for x in xs], dout, out.detach(), dict(zip(names, grads))


def _check(got, ref, tol, what):
    assert got is not None, f"{what}: no gradient"
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(ref.abs().max().item(), 1e-3)
    err = (got.detach().double().cpu() - ref).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:g} x {scale:.3e}"


def _run(backend, dtype, case, attention, gate):
    device = _dev(backend)
    k = CASES[case]
    sd, xs, dout, _, _ = _reference(case, attention, gate)
    layer = _layer(k["C"], k["D"], k["heads"], gate, attention, backend, dtype).to(device)
    layer.load_state_dict(sd)
    xs = [x.to(device, dtype, copy=True).requires_grad_() for x in xs]
    out = layer(*xs, up1=k["up1"], up3=k["up3"])
    out.backward(dout.to(device, dtype))
    grads = {"x1": xs[0].grad, "x2": xs[1].grad, "x3": xs[2].grad, "x4": xs[3].grad}
    grads.update({n: p.grad for n, p in layer.named_parameters()})
    return out, grads


@pytest.mark.parametrize("gate", [True, False], ids=["csa", "mhca"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend,dtype", RUNS, ids=[f"{b}-{str(d)[6:]}" for b, d in RUNS])
def test_forward_and_every_gradient_match_float64_reference(backend, dtype, case, attention, gate,
                                                           strict):
    """Also the poisoned-output test of the Triton and native kernels: every buffer they write
    starts as NaN (strict), so an unwritten element fails the comparison."""
    _skip_unless_runs(backend)
    if backend == "triton" and not _triton_subset(case, attention, gate):
        pytest.skip("interpreter time: this factor path runs in two other mode/gate combinations")
    _, _, _, ref_out, ref_grads = _reference(case, attention, gate)
    out, grads = _run(backend, dtype, case, attention, gate)
    assert out.dtype == dtype
    _check(out, ref_out, TOL[dtype], "out")
    assert set(grads) == set(ref_grads)
    for name, ref in ref_grads.items():
        assert torch.isfinite(grads[name]).all(), f"d{name} has NaN (an unwritten element?)"
        _check(grads[name], ref, TOL[dtype], f"d{name}")
    assert strict(_dev(backend))   # the kernels' buffers (out, partials, dx1..dx4, ...) came poisoned


@pytest.mark.parametrize("backend", ["torch", "triton", "cpp", "cuda"])
def test_gradients_that_vanish_are_exact_zeros(backend):
    """legacy: q/k weights get no gradient; normalized: the q/k biases cancel (centring)."""
    _skip_unless_runs(backend)
    _, g = _run(backend, torch.float32, "c13-b3-odd", "legacy", True)
    for n in ("query_conv.weight", "query_conv.bias", "key_conv.weight", "key_conv.bias"):
        assert torch.count_nonzero(g[n]) == 0, n
    _, g = _run(backend, torch.float32, "c13-b3-odd", "normalized", False)
    assert torch.count_nonzero(g["query_conv.bias"]) == 0
    assert torch.count_nonzero(g["key_conv.bias"]) == 0
    _, g = _run(backend, torch.float32, "c13-b3-odd", "legacy", False)
    assert torch.count_nonzero(g["x1"]) == 0 and torch.count_nonzero(g["x2"]) == 0


@pytest.mark.parametrize("backend,dtype", RUNS, ids=[f"{b}-{str(d)[6:]}" for b, d in RUNS])
def test_normalized_zero_norm_token_follows_f_normalize(backend, dtype, strict):
    """A query row of Wq that is zero makes a centred token of norm 0 < eps: the reference's
    F.normalize(eps=1e-12) divides by eps (a logit of 0, a gradient scaled by 1/eps); ours too."""
    _skip_unless_runs(backend)
    C, D, heads = 13, 6, 2
    ref = _layer(C, D, heads, True, "normalized", "reference")
    with torch.no_grad():
        ref.query_conv.weight[1].zero_()
    xs = [torch.randn(3, C, 7, 9, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    out = ref(*xs)
    dout = torch.randn_like(out)
    want = torch.autograd.grad(out, xs + list(ref.parameters()), dout)
    dev = _dev(backend)
    layer = _layer(C, D, heads, True, "normalized", backend, dtype).to(dev)
    layer.load_state_dict(ref.state_dict())
    ys = [x.detach().to(dev, dtype).requires_grad_() for x in xs]
    got_out = layer(*ys)
    got = torch.autograd.grad(got_out, ys + list(layer.parameters()), dout.to(dev, dtype))
    _check(got_out, out.detach(), TOL[dtype], "out")
    names = ["x1", "x2", "x3", "x4"] + [n for n, _ in ref.named_parameters()]
    assert want[names.index("query_conv.weight")].abs().max() > 1e9   # the 1/eps branch is taken
    for n, g, w in zip(names, got, want):
        if n in ("query_conv.bias", "key_conv.bias"):
            # zero in exact arithmetic; the reference's centring leaves 1e-16 x 1/eps of noise
            assert torch.count_nonzero(g) == 0, n
        else:
            _check(g, w, TOL[dtype], f"d{n}")


def _op_args(attention, gate, backend, dtype=torch.float64, B=2, C=3, H=4, W=6, up1=2, up3=1,
             heads=2, D=4, device="cpu"):
    torch.manual_seed(3)
    r = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
    xs = [r(B, C, H // up1, W // up1), r(B, C, H, W), r(B, C, H // up3, W // up3), r(B, C, H, W)]
    ws = [r(D, C) / C, r(D), r(D, C) / C, r(D), r(D, C) / C, r(D), r(C, D) / D, r(C)]
    gw = [r(4, 4 * C) / C, r(4)] if gate else [None, None]
    tau = [0.5 + torch.rand(heads, dtype=dtype, device=device)] if attention == "normalized" else [None]
    tensors = [t.requires_grad_() if t is not None else None for t in xs + ws + gw + tau]
    return tensors, (heads, attention, up1, up3, backend)


@pytest.mark.parametrize("gate", [True, False], ids=["csa", "mhca"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_gradcheck_float64(backend, attention, gate):
    """gradcheck of the op, every input and weight, float64, tiny shapes: element-wise for the
    most involved formula (normalized, gated), fast mode (random projections of the Jacobian)
    for the others — the float64 reference comparison above already checks every entry."""
    _skip_unless_runs(backend)
    tensors, cfg = _op_args(attention, gate, backend, W=4, up3=2)
    idx = [i for i, t in enumerate(tensors) if t is not None]

    def fn(*ts):
        full = list(tensors)
        for i, t in zip(idx, ts):
            full[i] = t
        return csa_op.csa_fwd(*full, *cfg)[0]

    assert torch.autograd.gradcheck(fn, tuple(tensors[i] for i in idx), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=(attention, gate) != ("normalized", True))


@pytest.mark.parametrize("gate", [True, False], ids=["csa", "mhca"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp", "cuda"])
def test_opcheck(backend, attention, gate):
    _skip_unless_runs(backend)
    if INTERPRETED and (backend, attention, gate) not in (
            ("torch", "paper", True), ("torch", "legacy", False), ("torch", "normalized", True),
            ("triton", "normalized", True), ("cpp", "paper", True), ("cpp", "legacy", False),
            ("cpp", "normalized", True)):
        pytest.skip("compile time: schema, fake and autograd glue are shared by all modes; "
                    "opchecked on three torch, three cpp and one triton configuration")
    dtype = torch.float64 if backend in ("torch", "cpp") else torch.float32
    tensors, cfg = _op_args(attention, gate, backend, dtype, device=_dev(backend))
    torch.library.opcheck(csa_op.csa_fwd, (*tensors, *cfg))
    out, gram, proj, vecs = csa_op.csa_fwd(*tensors, *cfg)
    plain = [t.detach() if t is not None else None for t in tensors]
    torch.library.opcheck(csa_op.csa_bwd, (torch.randn_like(out), *plain, gram, proj, vecs, *cfg))


@pytest.mark.parametrize("res", [64, 128])
@pytest.mark.parametrize("backend", ["torch", "triton", "cpp", "cuda"])
def test_saved_for_backward_is_under_one_percent_of_reference(backend, res):
    """C = 86, x1/x3 at LR (×4) as in the model, batch 1; bytes of the unique storages saved for
    backward, the four inputs and the parameters excluded."""
    _skip_unless_runs(backend)
    configs = [(a, g) for a in ATTENTIONS for g in (True, False)]
    if backend == "triton" and INTERPRETED:
        if res > 64:
            pytest.skip("interpreter time (the saved set is the op's, shared with the torch backend)")
        configs = [("normalized", False), ("paper", True)]   # the tightest, and the paper's
    C, s, dev = 86, 4, _dev(backend)
    for attention, gate in configs:
        layer = _layer(C, 64, 4, gate, attention, "reference", torch.float32).to(dev)
        xs = [torch.randn(1, C, res // s, res // s, device=dev), torch.randn(1, C, res, res, device=dev),
              torch.randn(1, C, res // s, res // s, device=dev), torch.randn(1, C, res, res, device=dev)]
        xs = [x.requires_grad_() for x in xs]
        exclude = xs + list(layer.parameters())
        ref, _ = saved_bytes(lambda: layer(*xs, up1=s, up3=s), exclude)
        layer.backend = backend
        fused, _ = saved_bytes(lambda: layer(*xs, up1=s, up3=s), exclude)
        assert ref > 4 * C * res * res * 4  # the reference keeps several inputs' worth
        assert fused <= 0.01 * ref, (attention, gate, fused, ref)


def test_auto_picks_the_fastest_fused_backend_on_cpu():
    """cpp where the extension is built (tests/test_native.py checks the fallback), else torch."""
    cpu = torch.device("cpu")
    want = "cpp" if "cpp" in backends.available("csa", cpu) else "torch"
    assert backends.resolve("csa", "auto", cpu) == want
    assert backends.get("csa", backends.resolve("csa", "auto", cpu)).call.__name__ == f"csa_{want}"


@pytest.mark.parametrize("backend,dtype,tol", [("triton", torch.float64, 1e-10),
                                               ("cuda", torch.float64, 1e-10),
                                               ("cpp", torch.bfloat16, 2e-2)])
def test_unsupported_dtype_is_a_clear_error_and_auto_routes_it(backend, dtype, tol):
    """The op refuses a dtype its kernels do not take (ValueError naming x2), and so does a layer
    that asks for that backend (never a silent reroute); "auto" on that device picks a backend
    that takes the dtype."""
    _skip_unless_runs(backend)
    dev = _dev(backend)
    tensors, cfg = _op_args("paper", True, backend, dtype, device=dev)
    with pytest.raises(ValueError, match=f"x2: the {backend} backend of csa takes float32"):
        csa_op.csa_fwd(*tensors, *cfg)
    xs = [t.detach() for t in tensors[:4]]
    layer = _layer(3, 4, 2, True, "paper", backend, dtype).to(dev)
    with pytest.raises(ValueError, match=f"backend: '{backend}' cannot run 'csa' on {dev}.*{dtype}"):
        layer(*xs, up1=2)
    layer.backend = "auto"
    assert backends.resolve("csa", "auto", torch.device(dev), dtype) not in (backend, "reference")
    ref = _layer(3, 4, 2, True, "paper", "reference", dtype).to(dev)
    torch.testing.assert_close(layer(*xs, up1=2), ref(*xs, up1=2), rtol=tol, atol=tol)


def _model_grads(model, lr, msi):
    out, fused = model(lr, msi)
    (out.square().mean() + fused.sum()).backward()   # fused.sum(): an expanded (stride-0) dout
    return out.detach(), fused.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_model_with_fused_backends_matches_reference(attention):
    """CSAKDNet (x1, x3 handed over at LR, up = scale) with the fused CSA against the same model
    with the reference CSA, both float32 (float64 convolutions are slow on a busy CPU), 1e-5.
    Gradients that vanish in exact arithmetic (legacy q/k, normalized q/k biases) are float32
    rounding noise in the reference; the op-level tests check them against float64."""
    from conftest import small

    cfg = small("student", attention=attention, layers=(1, 1, 1, 1))
    torch.manual_seed(0)
    ref_model = cf.CSAKDNet(cfg, backend="reference").to(DEV)
    lr, msi = torch.randn(2, 31, 3, 5, device=DEV), torch.randn(2, 3, 12, 20, device=DEV)
    ref = _model_grads(ref_model, lr, msi)
    noise = {"legacy": ("query_conv.", "key_conv."),
             "normalized": ("query_conv.bias", "key_conv.bias")}.get(attention, ())
    for backend in (b for b in FUSED if _dev(b) == DEV):
        model = cf.CSAKDNet(cfg, backend="reference").to(DEV)
        model.load_state_dict(ref_model.state_dict())
        model.decoder.fuse_att.backend = backend   # the CLRA blocks are not this op's business
        got = _model_grads(model, lr, msi)
        _check(got[0], ref[0].double().cpu(), 1e-5, f"{backend} output")
        _check(got[1], ref[1].double().cpu(), 1e-5, f"{backend} fused")
        assert set(got[2]) == set(ref[2])
        for n in got[2]:
            if not any(n.startswith("decoder.fuse_att." + k) for k in noise):
                _check(got[2][n], ref[2][n].double().cpu(), 1e-5, f"{backend} d{n}")


def test_compile_fullgraph_layer_and_model():
    """torch.compile(fullgraph=True) traces through the custom op: inductor on the layer (forward
    and backward), aot_eager on a whole (one-block) model, both compiled before any eager call
    dispatched the op (backends.resolve runs eagerly at trace time: assume_constant_result)."""
    from conftest import small

    torch._dynamo.reset()
    layer = _layer(10, 8, 2, True, "normalized", "torch", torch.float32)
    xs = [torch.randn(2, 10, 3, 4), torch.randn(2, 10, 12, 16), torch.randn(2, 10, 3, 4),
          torch.randn(2, 10, 12, 16)]
    xs = [x.requires_grad_() for x in xs]
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(*xs, up1=4, up3=4)
    g = torch.autograd.grad(out.sum(), xs + list(layer.parameters()))
    eager = layer(*xs, up1=4, up3=4)
    g_eager = torch.autograd.grad(eager.sum(), xs + list(layer.parameters()))
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    model = cf.CSAKDNet(small("student", attention="paper", layers=(1, 1, 1, 1), nf=8, gc=4),
                        backend="torch" if "torch" in backends.available("clra") else "reference")
    model.decoder.fuse_att.backend = "torch"
    lr, msi = torch.randn(1, 31, 4, 4), torch.randn(1, 3, 16, 16)
    got = torch.compile(model, fullgraph=True, backend="aot_eager")(lr, msi)[1]
    got.sum().backward()
    torch.testing.assert_close(got, model(lr, msi)[1], rtol=1e-5, atol=1e-5)
    assert model.decoder.fuse_att.query_conv.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision runs on CUDA only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("gate", [True, False], ids=["csa", "mhca"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_half_precision_cuda(dtype, attention, gate):
    for backend in (b for b in FUSED if _dev(b) == "cuda"):
        _, _, _, ref_out, ref_grads = _reference("c86-b1-up4", attention, gate)
        out, grads = _run(backend, dtype, "c86-b1-up4", attention, gate)
        _check(out, ref_out, TOL[dtype], f"{backend} out")
        for name, ref in ref_grads.items():
            _check(grads[name], ref, TOL[dtype], f"{backend} d{name}")

