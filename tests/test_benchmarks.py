"""The benchmark harness (benchmarks/): counters, statistics, search, floors, the harness end to
end, outputs, RESULTS.md, comparisons (its cases and options: tests/test_benchmark_cases.py)."""
import importlib.util
import json

import pytest
import torch

from benchmarks import compare, floors, maxres, memory, report, results, run, timing
from benchmarks.ops import clra as clra_cases
from benchmarks.ops import csa as csa_cases
from csakd_fast import backends
from csakd_fast.ops.clra import clra_reference
from csakd_fast.ops.csa import csa_reference


# --- saved-for-backward bytes --------------------------------------------------------------------
def test_saved_bytes_counts_unique_storages():
    a = torch.randn(256, requires_grad=True)  # 1024 bytes
    with memory.SavedBytes(exclude=[a]) as c:
        a.sin()               # saves a
        a[:128].cos()         # saves a view of a: same storage, no bytes added
        a * a                 # saves a twice: counted once
    assert c.total == 1024 and len(c.storages) == 1 and c.saved_tensors >= 4
    assert c.activations == 0  # a is an input
    with c:
        e = a.exp()           # saves its own output: a new storage
    assert c.total == 2048 and c.activations == 1024 and len(c.storages) == 2
    (e * 2).sum()             # outside the block: not counted
    assert c.total == 2048
    s = c.summary()
    assert s["saved_bytes"] == 2048 and s["saved_bytes_activations"] == 1024


def test_saved_bytes_counts_whole_storage_of_a_saved_view():
    big = torch.randn(1000)
    w = torch.randn(10, requires_grad=True)
    with memory.SavedBytes() as c:
        w * big[:10]          # saves the view big[:10], which keeps all 4000 bytes alive
    assert c.storages[big.untyped_storage().data_ptr()] == 4000


def test_rss_increase_sees_a_new_allocation():
    with memory.RssPeak() as r:
        t = torch.ones(16 * 2 ** 20)  # 64 MiB, touched
        del t
    res = r.result()
    assert res["rss_method"] in ("vmhwm-reset", "ru_maxrss-delta")
    if res["rss_method"] == "vmhwm-reset":
        assert res["rss_increase_bytes"] >= 60 * 2 ** 20


def test_is_oom():
    assert memory.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not memory.is_oom(RuntimeError("shape mismatch"))


# --- statistics, search, floors ------------------------------------------------------------------
def test_summarize():
    s = timing.summarize([0.003, 0.001, 0.002, 0.004])
    assert s["median_ms"] == pytest.approx(2.5) and s["n"] == 4
    assert s["p25_ms"] == pytest.approx(1.75) and s["p75_ms"] == pytest.approx(3.25)
    assert s["min_ms"] == pytest.approx(1) and s["max_ms"] == pytest.approx(4)
    assert s["iqr_rel"] == pytest.approx(1.5 / 2.5)
    with pytest.raises(ValueError, match="samples_s"):
        timing.summarize([])


@pytest.mark.parametrize("limit, want", [(1000, 992), (100, 96), (16, 16), (10, 0), (10 ** 6, 4096),
                                         (4095, 4080), (257, 256)])
def test_largest_fitting(limit, want):
    tried = []

    def fits(s):
        tried.append(s)
        return s <= limit

    best, tries, how = maxres.largest_fitting(fits, step=16, start=256, cap=4096)
    assert best == want, (tries, how)
    assert all(s % 16 == 0 for s in tried) and len(tried) == len(set(tried)) <= 13


def test_maxres_search_runs_a_real_training_step():
    rec = maxres.search(torch.device("cpu"), torch.float32, "reference", 1, width="tiny", cap=32,
                        log=lambda *a: None)
    assert rec["status"] == "ok" and rec["max_res"] == 32 and rec["ended"] == "cap reached"
    assert [t["res"] for t in rec["tries"]] == [16, 32] and all(t["ok"] for t in rec["tries"])


def test_floors_match_design():
    # docs/design.md, "Measuring": a dense block does ≈ 0.87 MFLOP per pixel against ≈ 2.2 kB of
    # bf16 traffic
    f = clra_cases.floor(1, 86, 43, 1, 1, 1, "fwd", 2)
    assert f["flops"] / 3 == pytest.approx(0.865e6, rel=1e-3)
    assert f["bytes"] / 3 == 2236
    assert clra_cases.floor(1, 86, 43, 43, 1, 1, "fwd", 2)["flops"] == pytest.approx(f["flops"] / 43)
    # the CSA forward: 7·C·N element moves and ≈ (4C² + 32C)·N flops, x1/x3 at full resolution
    g = csa_cases.floor(2, 86, 8, 8, 1, 1, "fwd", 4)
    assert g["bytes"] == 2 * 4 * 7 * 86 * 64 and g["flops"] == 2 * (4 * 86 ** 2 + 32 * 86) * 64
    assert csa_cases.floor(1, 86, 8, 8, 4, 4, "fwd", 4)["bytes"] < g["bytes"] / 2
    a = floors.achieved({"bytes": 1e9, "flops": 1e9}, {"bandwidth_Bps": 1e10, "matmul_flops": 1e12}, 200.0)
    assert a["bound"] == "memory" and a["floor_ms"] == pytest.approx(100) and a["achieved_fraction"] == 0.5


# --- the harness end to end ----------------------------------------------------------------------
@pytest.fixture
def second_backends(monkeypatch):
    """A correct 'cpp' CSA and a deliberately wrong 'cpp' CLRA, so that the run has a second backend
    to compare (restored afterwards)."""
    def clra(x, w, b, groups, recompute):
        return clra_reference(x, w, b, groups, recompute) * 1.01

    f32 = (torch.float32,)
    monkeypatch.setitem(backends._IMPLS["csa"], "cpp", backends.Impl("csa", "cpp", csa_reference, f32))
    monkeypatch.setitem(backends._IMPLS["clra"], "cpp", backends.Impl("clra", "cpp", clra, f32))


def test_harness_end_to_end(tmp_path, second_backends):
    out = tmp_path / "run"
    rc = run.main(["--suite", "smoke", "--out", str(out), "--backends", "reference,cpp", "--quiet",
                   "--no-plots", "--cases", "csa,clra,teacher,student,cotrain"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    recs = doc["records"]
    assert {r["case"] for r in recs} == {"csa", "clra", "teacher", "student", "cotrain"}
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    for r in recs:
        for f in ("device_name", "cpu_model", "torch", "triton", "dtype", "threads", "shapes"):
            assert f in r
        assert r["time"]["n"] >= 2 and r["time"]["median_ms"] > 0
        assert r["speedup_vs_reference"] > 0
        if r["mode"] != "fwd":
            assert r["saved_bytes_activations"] > 0 and r["saved_bytes"] >= r["saved_bytes_activations"]
        assert r["rss_method"] in ("vmhwm-reset", "ru_maxrss-delta")
    by = {(r["case"], r["mode"], r["backend"]): r for r in recs}
    assert by[("csa", "fwd", "cpp")]["check"]["ok"]
    assert not by[("clra", "fwd", "cpp")]["check"]["ok"]  # the wrong backend is flagged
    assert by[("csa", "fwd+bwd", "cpp")]["saved_vs_reference"] == pytest.approx(1.0)
    assert set(by[("cotrain", "step", "reference")]["saved_by_phase"]) == {"teacher", "student"}
    assert set(by[("clra", "fwd+bwd", "reference")]["segments_ms"]) == {"fwd", "bwd"}
    assert "floor" in by[("csa", "fwd", "reference")] and "floor" not in by[("teacher", "fwd", "reference")]
    md = (out / "results.md").read_text()
    assert "## csa — fwd+bwd" in md and "| 16 | 1 | cpp |" in md
    # plots (of two groups: rendering is the slow part on a shared 2-core machine)
    few = {**doc, "records": [r for r in recs if r["case"] == "csa"]}
    notes = []
    written = [p.name for p in report.write_outputs(few, out, log=notes.append)]
    if importlib.util.find_spec("matplotlib") is None:   # a bare environment: numbers, no plots
        assert written == ["results.md"] and "matplotlib is not installed" in notes[0]
    else:
        assert written == ["results.md", "time.png", "memory.png"] and not notes
        for png in ("time.png", "memory.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # RESULTS.md from that run; a second device keeps its own section
    path = tmp_path / "RESULTS.md"
    with pytest.raises(ValueError, match="meta.suite: expected 'quick' or 'full'"):
        results.write_results([out / "results.json"], path)
    results.write_results([out / "results.json"], path, allow_smoke=True)
    text = path.read_text()
    assert doc["meta"]["device_name"] in text and doc["meta"]["date"] in text
    assert "#### csa — fwd" in text
    assert (tmp_path / "results").is_dir() == (out / "time.png").is_file()   # the plots, copied
    other = json.loads(json.dumps(doc))
    other["meta"]["device_name"] = "Fake GPU"
    other["meta"]["device"] = "cuda"
    for r in other["records"]:
        r["device_name"], r["device"] = "Fake GPU", "cuda"
    (tmp_path / "other.json").write_text(json.dumps(other))
    results.write_results([tmp_path / "other.json"], path, allow_smoke=True)
    results.write_results([out / "results.json"], path, allow_smoke=True)  # replaces, never duplicates
    text = path.read_text()
    assert "## Fake GPU (cuda)" in text and text.count(f"## {doc['meta']['device_name']} (cpu)") == 1


def _doc(**meta_changes):
    rec = {"device": "cpu", "device_name": "X CPU", "cpu_model": "X CPU", "torch": "2.x",
           "dtype": "float32", "threads": 2, "date": "2026-01-01T00:00:00Z", "case": "csa",
           "mode": "fwd", "res": 16, "batch": 1, "backend": "reference", "status": "ok",
           "time": timing.summarize([0.001, 0.002])}
    meta = {k: rec[k] for k in ("device", "device_name", "cpu_model", "torch", "dtype", "threads", "date")}
    meta.update(producer="csakd_fast-benchmarks", schema=1, suite="quick")
    meta.update(meta_changes)
    return {"meta": meta, "records": [rec], "maxres": []}


def test_results_writer_refuses_records_without_device_info(tmp_path):
    path = tmp_path / "RESULTS.md"
    good = _doc()
    (tmp_path / "good.json").write_text(json.dumps(good))
    results.write_results([tmp_path / "good.json"], path)
    assert "X CPU" in path.read_text()

    def refuses(doc, match):
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(doc))
        before = path.read_text()
        with pytest.raises(ValueError, match=match):
            results.write_results([p], path)
        assert path.read_text() == before  # nothing written

    bad = _doc()
    del bad["records"][0]["device_name"]
    refuses(bad, r"records\[0\].*device_name: expected the device information")
    bad = _doc()
    bad["records"][0]["cpu_model"] = ""
    refuses(bad, "cpu_model")
    refuses(_doc(producer="by hand"), "meta.producer: expected 'csakd_fast-benchmarks'")
    refuses(_doc(date=None), "meta.date")
    bad = _doc()
    bad["records"][0]["device_name"] = "Other"
    refuses(bad, "device_name: expected 'X CPU'")
    bad = _doc()
    bad["records"][0]["status"] = "oom"
    refuses(bad, "none measured")
    refuses({"records": []}, "expected the harness's JSON")


# --- comparing two runs ---------------------------------------------------------------------------
def test_compare_two_runs(tmp_path, capsys):
    def doc(ms_ref, ms_torch, extra=()):
        d = _doc()
        ref = d["records"][0]
        ref["time"] = timing.summarize([ms_ref / 1e3])
        fused = {**ref, "backend": "torch", "time": timing.summarize([ms_torch / 1e3])}
        d["records"] = [ref, fused] + [{**ref, "case": c} for c in extra]
        return d

    old, new = doc(10.0, 5.0, extra=("gone",)), doc(10.0, 8.0)
    new["meta"]["threads"] = 4
    result = compare.compare(old, new, threshold=0.1)
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["reference"]["ratio"] == pytest.approx(1.0) and not rows["reference"]["slower"]
    assert rows["torch"]["ratio"] == pytest.approx(1.6) and rows["torch"]["slower"]
    assert rows["torch"]["old_vs_ref"] == pytest.approx(2.0) and rows["torch"]["new_vs_ref"] == pytest.approx(1.25)
    assert (result["only_old"], result["only_new"]) == (1, 0)
    assert result["notes"] == ["threads: 2 then 4"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert compare.main([str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    assert compare.main([str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--fail"]) == 1
    out = capsys.readouterr().out
    assert "| csa | fwd | 16 | 1 | torch | 5 | 8 | 1.600 **slower than 1.10×** | 2.00× | 1.25× |" in out
    with pytest.raises(ValueError, match="expected the JSON of a harness run"):
        compare.compare({"records": []}, new)


# --- every backend against the reference (gpu_check.sh's step 2) ---------------------------------
def test_agree_passes_on_the_cpu_backends():
    """benchmarks.agree on the compiled CPU backends (Triton is interpreted here: slow at these
    sizes; its kernels are checked in tests/test_op_*.py): the float64 reference as the oracle, so
    gradients that vanish in exact arithmetic (legacy q/k, normalized q/k biases) compare as
    exact zeros, not as float32 rounding noise (on which a relative error is 1)."""
    from benchmarks import agree

    rows = agree.check(torch.device("cpu"), log=lambda *a: None, only=("torch", "cpp"))
    assert {r["op"] for r in rows} == {"csa", "clra"} and len(rows) >= 5
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
