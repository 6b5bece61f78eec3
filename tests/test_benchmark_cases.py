"""The benchmark harness's cases (benchmarks/ops/<op>.py, the model cases), its suites and its
command-line options; tests/test_benchmarks.py has the counters, statistics and outputs."""
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

import csakd_fast.memory
from benchmarks import cases, memory, ops, run
from benchmarks.ops import clra as clra_cases
from benchmarks.ops import csa as csa_cases
from csakd_fast import backends


# --- the op modules, the suites, the options ---------------------------------------------------
CPU = torch.device("cpu")


def _request(suite="smoke", device=CPU, **options):
    dev = torch.device(device)
    return cases.Request(cases.get_suite(suite, dev), dev, torch.float32, cases.Options(**options))


def _keys(case_list):
    return [c.key for c in case_list]


def test_op_module_cases_run_through_the_harness(tmp_path):
    """benchmarks/ops lists its modules explicitly; a module's cases run through the harness with
    the checks of every case (output vs the reference, saved bytes, floor)."""
    assert [m.__name__ for m in ops.MODULES] == ["benchmarks.ops.csa", "benchmarks.ops.clra"]
    found = clra_cases.cases(_request())
    assert _keys(found) == [("clra", "fwd", 16, 1), ("clra", "fwd+bwd", 16, 1),
                            ("clra_recompute", "fwd+bwd", 16, 1)]
    h = run.Harness(CPU, torch.float32, cases.get_suite("smoke", CPU), tmp_path / "out",
                    log=lambda *a: None)
    h.ceilings = {"bandwidth_Bps": 1e9, "matmul_flops": 1e9}
    h.cases = found
    case = found[1]
    ref, fused = h.run_group(case, ["reference", "torch"])
    for rec in (ref, fused):
        assert rec["status"] == "ok", rec.get("error")
        assert rec["source"] == "benchmarks.ops.clra" and rec["saved_bytes_activations"] > 0
        want = case.floor(4)
        assert rec["floor"]["bytes"] == want["bytes"]
        assert rec["floor"]["floor_ms"] == pytest.approx(max(want["bytes"], want["flops"]) / 1e6)
    assert fused["check"]["ok"] and fused["saved_bytes_activations"] < ref["saved_bytes_activations"]
    assert "floor" not in h.run_one(found[2], "reference")   # recompute: no floor, as before
    with pytest.raises(ValueError, match="modes: expected 'fwd' or 'fwd\\+bwd'"):
        cases.module_cases("x", (), 1, 1, lambda *a: None, ("step",))


# the quick CPU suite of benchmarks/RESULTS.md (commit 63d9f11): cases, modes, points, backends
QUICK_CPU = {
    ("csa", "fwd+bwd", 128, 2): ["reference", "compile", "torch", "cpp"],
    ("csa", "fwd+bwd", 256, 2): ["reference", "torch", "cpp"],
    ("clra", "fwd+bwd", 64, 1): ["reference", "compile", "torch"],
    ("clra", "fwd+bwd", 128, 1): ["reference", "torch"],
    ("teacher", "fwd", 64, 1): ["reference", "torch", "auto"],
    ("student", "fwd", 64, 1): ["reference", "torch", "auto"],
    ("cotrain", "step", 64, 1): ["reference", "torch", "auto"],
    ("csa_normalized", "fwd", 128, 2): ["reference", "torch", "cpp"],
    ("csa_normalized", "fwd+bwd", 128, 2): ["reference", "torch", "cpp"],
    ("clra_recompute", "fwd+bwd", 128, 1): ["reference", "torch"],
}


def test_quick_cpu_suite_keeps_its_cases():
    h = run.Harness(CPU, torch.float32, cases.get_suite("quick", CPU), "unused", log=lambda *a: None)
    want = {k: [b for b in v if b in backends.available("csa" if k[0].startswith("csa") else "clra")
                or b in ("compile", "auto")] for k, v in QUICK_CPU.items()}
    got = {c.key: h.backends_for(c) for c in h.cases}
    if "cpp" not in backends.available("csa"):  # no native build here: auto is torch for both ops
        want = {k: [b for b in v if b != "auto"] for k, v in want.items()}
    assert got == want
    assert [c.extra for c in h.cases] == sorted(c.extra for c in h.cases)   # variants last
    with_floor = {c.name for c in h.cases if c.floor is not None}
    assert with_floor == {"csa", "clra"}


def test_cuda_suites_time_recompute_steps_and_the_dgrad_variant():
    for suite in ("quick", "full"):
        found = cases.suite_cases(_request(suite, "cuda"))
        names = {c.name for c in found}
        assert {"cotrain", "cotrain_recompute", "csa_normalized", "clra_recompute"} <= names
        for c in found:
            dgrad = "triton/dgrad" in c.variants
            assert dgrad == (c.name.startswith("clra") and c.mode == "fwd+bwd"), c.key
            if dgrad:
                assert c.variants["triton/dgrad"][0] == "triton"


def test_res_and_batch_replace_the_op_cases_points():
    keys = _keys(cases.suite_cases(_request("quick", res=(32,), batch=(1, 3))))
    op = [k for k in keys if k[0].startswith(("csa", "clra"))]
    assert {(k[2], k[3]) for k in op} == {(32, 1), (32, 3)}
    assert ("csa", "fwd+bwd", 32, 3) in op and ("clra_recompute", "fwd+bwd", 32, 1) in op
    assert ("teacher", "fwd", 64, 1) in keys and ("cotrain", "step", 64, 1) in keys  # kept
    only_res = _keys(csa_cases.cases(_request("quick", res=(64,))))
    assert only_res == [("csa", "fwd+bwd", 64, 2), ("csa_normalized", "fwd", 64, 2),
                        ("csa_normalized", "fwd+bwd", 64, 2)]


def test_groups_option_gives_clra_cases_per_group():
    found = clra_cases.cases(_request(groups=(1, 2), modes=("fwd+bwd",)))
    assert _keys(found) == [("clra", "fwd+bwd", 16, 1), ("clra_g2", "fwd+bwd", 16, 1),
                            ("clra_recompute", "fwd+bwd", 16, 1),
                            ("clra_g2_recompute", "fwd+bwd", 16, 1)]
    assert [c.params["groups"] for c in found] == [1, 2, 1, 2]
    assert found[1].floor(4)["flops"] == pytest.approx(found[0].floor(4)["flops"] / 2)
    # without --groups, the suite's grouped points (full: nf // 2 = 43)
    assert ("clra_g43", "fwd", 128, 1) in _keys(clra_cases.cases(_request("full")))
    with pytest.raises(ValueError, match="groups: expected divisors of nf=8 and gc=4, got 3"):
        clra_cases.cases(_request(groups=(3,)))


def test_attention_option_gives_csa_cases_per_mode():
    found = csa_cases.cases(_request("quick", attention=("paper", "legacy")))
    assert _keys(found) == [("csa", "fwd+bwd", 128, 2), ("csa", "fwd+bwd", 256, 2),
                            ("csa_legacy", "fwd+bwd", 128, 2), ("csa_legacy", "fwd+bwd", 256, 2)]
    assert [c.params["attention"] for c in found] == ["paper"] * 2 + ["legacy"] * 2
    assert [c.floor is not None for c in found] == [True, True, False, False]
    assert [c.extra for c in found] == [False, False, True, True]
    with pytest.raises(ValueError, match="attention: expected modes among"):
        csa_cases.cases(_request(attention=("fancy",)))


def test_modes_option_sets_the_op_cases_modes():
    found = cases.suite_cases(_request(modes=("fwd",)))
    op = [c.key for c in found if not c.model]
    assert op == [("csa", "fwd", 16, 1), ("clra", "fwd", 16, 1), ("csa_normalized", "fwd", 16, 1)]
    assert {c.name for c in found if c.model} == {"teacher", "student", "cotrain", "cotrain_recompute"}


def test_cases_option_takes_shell_patterns():
    picked, notes = cases.select(cases.suite_cases(_request()), ["clra*", "cotrain", "nothing*"])
    assert {c.name for c in picked} == {"clra", "clra_recompute", "cotrain"}
    assert notes == ["--cases: 'nothing*' matches no case of this run"]
    assert cases.select(picked, None)[0] == picked


def test_command_line_options_reach_the_run(tmp_path):
    """--repeats fixes the timed iterations; --res, --batch, --modes, --groups, --attention and
    --cases reach the cases; bad values are refused."""
    out = tmp_path / "run"
    rc = run.main(["--suite", "smoke", "--out", str(out), "--backends", "reference,torch",
                   "--quiet", "--no-plots", "--cases", "clra*,csa*", "--res", "8", "--batch", "2",
                   "--modes", "fwd+bwd", "--groups", "2", "--attention", "legacy", "--repeats", "3"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert {(r["case"], r["mode"], r["res"], r["batch"]) for r in doc["records"]} == {
        ("csa_legacy", "fwd+bwd", 8, 2), ("clra_g2", "fwd+bwd", 8, 2),
        ("clra_g2_recompute", "fwd+bwd", 8, 2)}
    assert all(r["status"] == "ok" and r["time"]["n"] == 3 for r in doc["records"])
    assert doc["meta"]["timing"]["reps"] == [3, 3]
    assert doc["meta"]["options"] == {"res": [8], "batch": [2], "groups": [2],
                                      "attention": ["legacy"], "modes": ["fwd+bwd"]}
    assert "3 timed iterations per run" in (out / "results.md").read_text()
    for bad in (["--modes", "step"], ["--groups", "0"], ["--res", "x"], ["--repeats", "0"],
                ["--attention", "fancy"]):
        with pytest.raises(SystemExit):
            run.parse_args(bad)
    assert run.main(["--suite", "smoke", "--groups", "3", "--out", str(tmp_path / "bad"),
                     "--quiet"]) == 2   # 3 divides neither nf = 8 nor gc = 4


def _script_runs(script: str):
    """The ``python -m benchmarks`` command lines of a shell script, parsed by the harness."""
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / script).read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    runs = []
    for line in text.splitlines():
        m = re.search(r'-m benchmarks (.*?)(2>&1|$)', line)
        if m and not line.lstrip().startswith("#"):
            args = re.sub(r"\$\(\(.*?\)\)", "100", m.group(1))   # $(( BLOCK_S - 20 ))
            args = re.sub(r"\$\{?(\w+)\}?", lambda v: "OUT" if v.group(1) == "OUT" else "100", args)
            runs.append(run.parse_args(shlex.split(args)))
    return runs


def _script_cases(args):
    dev = torch.device(args.device)
    req = cases.Request(cases.get_suite(args.suite, dev), dev, run.DTYPES[args.dtype],
                        run.options_from(args))
    return cases.select(cases.suite_cases(req), args.cases.split(",") if args.cases else None)[0]


def test_gpu_check_scripts_reproduce_what_they_measured():
    [csa_run] = _script_runs("gpu_check_csa.sh")
    assert (csa_run.device, csa_run.dtype, csa_run.repeats, csa_run.compile) == ("cuda", "bfloat16", 20, "all")
    assert _keys(_script_cases(csa_run)) == [("csa", "fwd", 256, 8), ("csa", "fwd+bwd", 256, 8)]
    assert all(c.params["channels"] == 86 and c.params["attention"] == "paper"
               for c in _script_cases(csa_run))
    block, steps = _script_runs("gpu_check_clra.sh")
    got = _script_cases(block)
    assert {c.key for c in got} == {(n, m, 256, 8) for n in ("clra", "clra_g43") for m in ("fwd", "fwd+bwd")} | {
        (n, "fwd+bwd", 256, 8) for n in ("clra_recompute", "clra_g43_recompute")}
    assert all(("triton/dgrad" in c.variants) == (c.mode == "fwd+bwd") for c in got)
    assert block.dtype == "bfloat16" and block.compile == "all"
    assert {c.key for c in _script_cases(steps)} == {("cotrain", "step", 128, 8),
                                                     ("cotrain_recompute", "step", 128, 8)}
    full = _script_runs("gpu_check.sh")
    assert [(a.device, a.suite) for a in full] == [("cuda", "full")]


def test_backends_for_includes_compile_only_where_asked():
    dev = torch.device("cpu")
    quick = cases.get_suite("quick", dev)
    h = run.Harness(dev, torch.float32, quick, "unused", log=lambda *a: None)
    got = {c.key: h.backends_for(c) for c in h.cases}
    assert "compile" in got[("csa", "fwd+bwd", 128, 2)]
    assert "compile" not in got[("csa", "fwd+bwd", 256, 2)]
    assert "compile" not in got[("cotrain", "step", 64, 1)]
    assert "compile" not in got[("clra_recompute", "fwd+bwd", 128, 1)]
    assert all("triton" not in v and "triton/dgrad" not in v for v in got.values())
    assert all(v[0] == "reference" for v in got.values())


def test_run_group_interleaves_backends_and_keeps_going_after_a_failure(tmp_path):
    """Timed rounds alternate between backends (a drifting machine slows them alike); a backend
    that fails mid-run is recorded as an error and the others finish."""
    calls = []

    class Logged(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.w = name, torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            calls.append(self.name)
            if self.name == "cpp" and calls.count("cpp") == 2:   # its first timed round
                raise RuntimeError("boom")
            return x * self.w

    def build(backend, device, dtype):
        return Logged(backend), lambda seed: (torch.randn(3, generator=torch.Generator().manual_seed(seed)),)

    [case] = cases.module_cases("order", (), 4, 1, build, ("fwd",))
    dev = torch.device("cpu")
    h = run.Harness(dev, torch.float32, cases.get_suite("smoke", dev), tmp_path, log=lambda *a: None)
    ref, torch_, cpp = h.run_group(case, ["reference", "torch", "cpp"])
    assert ref["status"] == torch_["status"] == "ok" and ref["time"]["n"] == torch_["time"]["n"] == 2
    assert cpp["status"] == "error" and "boom" in cpp["error"]
    assert torch_["check"]["ok"]
    # warm-ups in turn, then round 0 of each, then round 1 without the failed backend
    assert calls == ["reference", "torch", "cpp", "reference", "torch", "cpp", "reference", "torch"]


def test_dgrad_variant_reaches_backward(monkeypatch, tmp_path):
    """The harness's triton/dgrad variant of a CLRA case (a tiny block; Triton under the
    interpreter): it is timed beside triton, and its backward — and only its — runs the Triton
    input-gradient kernel (the mode is read when backward runs: the scope wraps the step)."""
    clra_triton = pytest.importorskip("csakd_fast.ops.clra.impl_triton")
    if "triton" not in backends.available("clra", "cpu"):
        pytest.skip("the triton CLRA backend does not run on the CPU here (TRITON_INTERPRET unset)")
    used = []
    real = clra_triton.conv3x3_dgrad
    monkeypatch.setattr(clra_triton, "conv3x3_dgrad", lambda *a: used.append(1) or real(*a))
    dev = torch.device("cpu")
    h = run.Harness(dev, torch.float32, cases.get_suite("smoke", dev), tmp_path, log=lambda *a: None,
                    backends=["reference", "triton", "triton/dgrad"],
                    options=cases.Options(res=(6,)))
    [case] = [c for c in h.cases if c.key == ("clra", "fwd+bwd", 6, 1)]
    assert h.backends_for(case) == ["reference", "triton", "triton/dgrad"]
    ref, aten, dgrad = h.run_group(case, h.backends_for(case))
    assert all(r["status"] == "ok" for r in (ref, aten, dgrad)), [r.get("error") for r in (ref, aten, dgrad)]
    assert dgrad["resolved"] == aten["resolved"] == {"clra": "triton"}
    assert dgrad["check"]["ok"] and aten["check"]["ok"]
    # its warm-up and its two timed backwards: 15 convs' input gradients each (x needs a
    # gradient); triton's own three backwards (aten's input gradients) add none
    assert dgrad["time"]["n"] == aten["time"]["n"] == 2
    assert len(used) == (1 + dgrad["time"]["n"]) * 15
    assert not h.backends_for([c for c in h.cases if c.key == ("clra", "fwd", 6, 1)][0]).count("triton/dgrad")


def test_one_saved_bytes_counter():
    """benchmarks/ counts saved bytes only through csakd_fast.memory.SavedBytes."""
    assert memory.SavedBytes is csakd_fast.memory.SavedBytes
    assert memory.saved_bytes is csakd_fast.memory.saved_bytes
    here = Path(memory.__file__).resolve().parent
    hooks = [p.name for p in here.rglob("*.py")
             if re.search(r"saved_tensors_hooks\s*\(|register_(pack|saved)", p.read_text())]
    assert hooks == []
