"""``python -m benchmarks``: every case of a suite, every backend side by side, in one process.

Cases: the op modules' (``benchmarks/ops/``) and the model cases (``benchmarks/models.py``) at
the suite's points (``benchmarks/cases.py``); ``--res``, ``--batch``, ``--groups``,
``--attention`` and ``--modes`` change the op cases, ``--cases`` picks cases by name (shell-style
patterns: ``'clra*'``), ``--repeats`` fixes the number of timed iterations.

Backends are those registered and runnable at run time (``csakd_fast.backends.available`` for each
op a case uses) plus ``compile`` = ``torch.compile`` of the reference, built fresh for each case
with ``dynamic=False`` after ``torch._dynamo.reset()``; its first call (compilation included) is
reported apart as ``first_call_s`` / ``compile_s`` and is never a timed iteration; plus a case's
variants (``triton/dgrad``) beside the backend they build with. Triton on a CPU would only run
under the interpreter and is left out there unless ``--backends`` names it (or a variant of it).

Order of work (so that a ``--deadline-s`` cuts the least useful runs): every case with every
non-compile backend (the reference first; the main op cases, the model cases, then the
secondary cases: ``csa_normalized``, the ``_recompute`` ones), then ``compile`` on the op cases, then the largest trainable
resolution search (GPU), then ``compile`` on the model cases. ``results.json`` is rewritten
after every case, so an interrupted run keeps what it measured.

Within a case the non-compile backends are timed interleaved (each is built and warmed up, then
round r of every backend runs before round r + 1): on a machine whose speed drifts (a shared VM,
a throttling CPU), timing one backend after the other put the drift into their ratio. ``compile``
is timed on its own, later, so its ratio to the reference spans two windows of the run.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

import torch

import csakd_fast.ops  # noqa: F401  (registers the ops' implementations)
from csakd_fast import backends as cf_backends
from csakd_fast._io import atomic_write_text

from . import PRODUCER, SCHEMA, env, floors, maxres, report
from .cases import (MODES, Case, Options, Probe, Request, Suite, compile_allowed, estimate_reps,
                    get_suite, select, suite_cases, with_repeats)
from .memory import free_device_memory, is_oom, peak_probe
from .ops.csa import ATTENTIONS
from .timing import Clock, WallClock, summarize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# relative L2 error of a backend's output against the reference's on input set 0 above which the
# record is flagged (recorded, never hidden); whole networks get 10x
TOLERANCE = {"cpu": {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3},
             "cuda": {"float32": 5e-3, "bfloat16": 3e-2, "float16": 5e-3}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default=None, choices=tuple(DTYPES),
                   help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--suite", default="quick", choices=("smoke", "quick", "full"))
    p.add_argument("--out", default=None, help="output folder (default runs/bench/<device>-<suite>-<time>)")
    p.add_argument("--backends", default=None,
                   help="comma list to restrict to (names of csakd_fast.backends.BACKENDS, 'compile', "
                        "'auto' and the cases' variants such as 'triton/dgrad')")
    p.add_argument("--cases", default=None,
                   help="comma list of case names or shell patterns (csa, 'clra*', teacher, ...)")
    p.add_argument("--res", type=_list(int), help="comma list: the op cases' resolutions")
    p.add_argument("--batch", type=_list(int), help="comma list: the op cases' batch sizes")
    p.add_argument("--groups", type=_list(int), help="comma list: CLRA cases for these groups (1,43)")
    p.add_argument("--attention", type=_list(str, ATTENTIONS),
                   help="comma list: CSA cases for these attention modes (paper, normalized, legacy)")
    p.add_argument("--modes", type=_list(str, MODES[:2]), help="comma list: the op cases' modes")
    p.add_argument("--repeats", type=lambda t: _list(int)(t)[0],
                   help="exactly this many timed iterations per run instead of the suite's budget")
    p.add_argument("--compile", default="suite", choices=("suite", "all", "none"),
                   help="where the compile backend runs: the suite's choice (default), every case, nowhere")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="stop starting runs after this many seconds (skipped runs are recorded)")
    p.add_argument("--no-maxres", action="store_true", help="skip the largest-resolution search")
    p.add_argument("--maxres-backends", default=None,
                   help="comma list (default: every available backend of both ops; 'compile' "
                        "recompiles at every size and is left out unless named)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--write-results", action="store_true",
                   help="also (re)write benchmarks/RESULTS.md from this run")
    p.add_argument("--results-path", default=None, help="RESULTS.md to write (with --write-results)")
    p.add_argument("--note", default=None, help="a note for RESULTS.md (e.g. 'machine was shared')")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def options_from(args) -> Options:
    """The op cases' options of parsed arguments."""
    return Options(res=args.res, batch=args.batch, groups=args.groups, attention=args.attention,
                   modes=args.modes)


def _list(cast, among=()):
    """An argparse type: a comma list of positive integers (``int``) or of names among ``among``."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            values = ()
        if not values or any(v not in among if among else v < 1 for v in values):
            want = ", ".join(among) if among else "positive integers"
            raise argparse.ArgumentTypeError(f"expected a comma list of {want}, got {text!r}")
        return values
    return parse


def _record_failure(rec: dict, e: BaseException) -> None:
    if is_oom(e):
        rec.update(status="oom", error=str(e).splitlines()[0][:300])
    else:
        rec.update(status="error", error=f"{type(e).__name__}: {e}"[:2000],
                   traceback=traceback.format_exc(limit=8)[-4000:])


def _groups(pairs):
    """[(case, backend), ...] → [(case, [backends of that case, in order]), ...]."""
    out = []
    for case, backend in pairs:
        if out and out[-1][0] is case:
            out[-1][1].append(backend)
        else:
            out.append((case, [backend]))
    return out


def _loadavg():
    """1/5/15-minute load averages: a busy machine makes every number slower (say so)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class Harness:
    def __init__(self, device: torch.device, dtype: torch.dtype, suite: Suite, out: Path,
                 backends: Optional[List[str]] = None, case_names: Optional[List[str]] = None,
                 deadline_s: Optional[float] = None, options: Options = Options(),
                 maxres: bool = True, maxres_backends: Optional[List[str]] = None,
                 command: str = "", compile_where: str = "suite", log=print):
        self.device, self.dtype, self.suite, self.out = device, dtype, suite, Path(out)
        self.only_backends, self.case_names = backends, case_names
        self.t0 = time.perf_counter()
        self.deadline = None if deadline_s is None else self.t0 + deadline_s
        self.do_maxres, self.maxres_backends = maxres, maxres_backends
        self.log = log
        self.compile_where = compile_where
        self.env = env.describe(device, dtype)
        self.dtype_name = self.env["dtype"]
        self.records: List[dict] = []
        self.maxres: List[dict] = []
        self.notes: List[str] = []
        self._ref_out: Dict[tuple, torch.Tensor] = {}
        self._pending: Dict[tuple, int] = {}
        self.ceilings: Optional[dict] = None
        self._clock = Clock(device)  # one L2-flush buffer for the whole run
        self.options = options
        self.cases, notes = select(suite_cases(Request(suite, device, dtype, options)), case_names)
        self.notes += notes
        self.available = {op: list(cf_backends.available(op, device)) for op in ("csa", "clra")}
        self.meta = {"producer": PRODUCER, "loadavg_start": _loadavg(), "schema": SCHEMA, "suite": suite.name,
                     "width": suite.width, "command": command, **self.env,
                     "available_backends": self.available,
                     "unavailable_backends": {op: {b: why for b, why in cf_backends.explain(op, device).items()
                                                   if why} for op in cf_backends.OPS},
                     "options": {k: list(v) for k, v in vars(options).items() if v},
                     "timing": {"warmup": suite.warmup, "reps": list(suite.reps),
                                "budget_s": suite.budget_s, "input_sets": suite.input_sets,
                                "clock": "cuda events" if device.type == "cuda" else "time.perf_counter",
                                "order": "interleaved"}}

    # --- planning ----------------------------------------------------------------------------
    def backends_for(self, case: Case) -> List[str]:
        names = None
        for op in case.ops:
            have = cf_backends.available(op, self.device)
            names = [b for b in (names if names is not None else have) if b in have]
        names = list(names or [])
        asked = {case.base(b) for b in self.only_backends or ()}
        if self.device.type == "cpu" and "triton" in names and "triton" not in asked:
            names.remove("triton")
            self._note_once("triton is left out on the CPU (it would run under the interpreter); "
                            "name it in --backends to time it anyway")
        want_compile = {"all": case.compile, "none": False}.get(
            self.compile_where, compile_allowed(self.suite, case))
        if "reference" in names and want_compile:
            names.insert(names.index("reference") + 1, "compile")
        for label, (base, _) in case.variants.items():   # beside the backend it builds with
            if base in names:
                names.insert(names.index(base) + 1, label)
        if len(case.ops) > 1 and names:
            # what a user of backend="auto" gets, when it mixes backends across the ops
            try:
                resolved = {cf_backends.resolve(op, "auto", self.device) for op in case.ops}
            except ValueError:
                resolved = set()
            if len(resolved) > 1:
                names.append("auto")
        if self.only_backends:
            names = [b for b in names if b in self.only_backends]
        return names

    def _note_once(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def plan(self):
        first, compile_ops, compile_models = [], [], []
        for case in self.cases:
            for b in self.backends_for(case):
                if b != "compile":
                    first.append((case, b))
                elif case.model:
                    compile_models.append((case, b))
                else:
                    compile_ops.append((case, b))
        for case, _ in first + compile_ops + compile_models:
            self._pending[case.key] = self._pending.get(case.key, 0) + 1
        return first, compile_ops, compile_models

    # --- one run --------------------------------------------------------------------------------
    def _base(self, case: Case, backend: str) -> dict:
        return {**self.env, "suite": self.suite.name, "case": case.name, "mode": case.mode,
                "res": case.res, "batch": case.batch, "backend": backend, "ops": list(case.ops),
                "shapes": case.shapes, "params": case.params, "source": case.source}

    def _remaining(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def _check(self, case: Case, backend: str, out) -> Optional[dict]:
        if out is None or not isinstance(out, torch.Tensor):
            return None
        o = out.detach().to("cpu", torch.float32, copy=True)
        if backend == "reference":
            self._ref_out[case.key] = o
            return None
        ref = self._ref_out.get(case.key)
        if ref is None:
            return None
        err = float((o - ref).norm() / ref.norm().clamp_min(1e-30))
        tol = TOLERANCE[self.device.type][self.dtype_name] * (10 if case.model else 1)
        return {"rel_l2_err": err, "tol": tol, "ok": bool(err <= tol)}

    def run_one(self, case: Case, backend: str) -> dict:
        return self.run_group(case, [backend])[0]

    def run_group(self, case: Case, names: List[str]) -> List[dict]:
        """One record per backend in ``names`` on ``case``. Each backend is built, warmed up
        (first call, output check, bytes saved for backward) in turn; then their timed iterations
        are interleaved, round r of every backend before round r + 1, so that a machine whose
        speed drifts during the case (a shared VM, a throttling CPU) moves every backend alike
        and the ratios between them hold. One failing backend never stops the others."""
        recs, live = [], []
        try:
            for backend in names:
                rec = self._base(case, backend)
                recs.append(rec)
                remaining = self._remaining()
                margin = 90 if backend == "compile" else 15
                if remaining is not None and remaining < margin:
                    rec.update(status="skipped",
                               error=f"deadline: {remaining:.0f} s left, {margin} s needed")
                    continue
                try:
                    live.append(self._warm(case, backend, rec))
                except Exception as e:  # noqa: BLE001
                    _record_failure(rec, e)
            rounds = max((t["reps"] for t in live), default=0)
            for r in range(rounds):
                for t in live:
                    if t["failed"] or r >= t["reps"]:
                        continue
                    try:
                        self._timed_iteration(t, r)
                    except Exception as e:  # noqa: BLE001
                        _record_failure(t["rec"], e)
                        t["failed"] = True
                        t["inst"] = t["sets"] = None
            for t in live:
                if not t["failed"]:
                    self._finish_timing(case, t)
        finally:
            live.clear()   # every tensor of the group (modules, inputs, outputs) goes with it
            if "compile" in names:
                with contextlib.suppress(Exception):
                    torch._dynamo.reset()
            free_device_memory(self.device)
        return recs

    def _warm(self, case: Case, backend: str, rec: dict) -> dict:
        compiled = backend == "compile"
        wrap = lambda m: m  # noqa: E731
        if compiled:
            import torch._dynamo

            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            wrap = lambda m: torch.compile(m, dynamic=False)  # noqa: E731
        built = "reference" if compiled else backend
        rec["resolved"] = {op: cf_backends.resolve(op, case.base(built), self.device)
                           for op in case.ops}
        inst = case.instance(built, wrap, self.device, self.dtype)
        sets = [inst.make_inputs(1000 + i) for i in range(max(1, self.suite.input_sets))]
        n_warm = max(1, self.suite.warmup) + (1 if compiled else 0)
        last_s = None
        for w in range(n_warm):
            x = sets[w % len(sets)]
            inst.prepare(x)
            # the last warm-up counts the bytes saved for backward (deterministic; hooks off in
            # timed iterations)
            counters = {} if w == n_warm - 1 else None
            probe = Probe(None, counters, inst.exclude(x) if counters is not None else ())
            with WallClock(self.device) as wc:
                out = inst.step(x, probe)
            if w == 0:
                rec["first_call_s"] = wc.seconds
                check = self._check(case, backend, out)
                if check is not None:
                    rec["check"] = check
            out = None
            last_s = wc.seconds
            if counters:
                per = {k: c.summary() for k, c in counters.items()}
                rec["saved_by_phase"] = per
                # phases (teacher, student) are never alive together: the larger one counts
                top = max(per.values(), key=lambda s: s["saved_bytes"])
                rec["saved_bytes"] = top["saved_bytes"]
                rec["saved_bytes_activations"] = max(s["saved_bytes_activations"] for s in per.values())
        rec["warmup"], rec["input_sets"] = n_warm, len(sets)
        return {"rec": rec, "inst": inst, "sets": sets, "compiled": compiled, "failed": False,
                "reps": estimate_reps(self.suite, last_s), "clock": self._clock.fork()}

    def _timed_iteration(self, t: dict, r: int) -> None:
        inst, clock = t["inst"], t["clock"]
        x = t["sets"][r % len(t["sets"])]
        inst.prepare(x)
        clock.flush_cache()
        # peak memory around the backend's first timed iteration: past every first-call effect,
        # and the probe's own work (heap trim, counter reset, synchronize) is outside the clock
        mem = peak_probe(self.device, clock.flush_bytes) if r == 0 else contextlib.nullcontext()
        with mem:
            clock.begin()
            inst.step(x, Probe(clock))
            clock.end(inst.end_label)
        if r == 0:
            t["rec"].update(mem.result())

    def _finish_timing(self, case: Case, t: dict) -> None:
        rec = t["rec"]
        samples = t["clock"].samples()
        rec["time"] = summarize([s["total"] for s in samples])
        labels = [k for k in samples[0] if k != "total"]
        if len(labels) > 1:
            rec["segments_ms"] = {k: summarize([s[k] for s in samples])["median_ms"] for k in labels}
        if t["compiled"]:
            c = torch._dynamo.utils.counters
            rec["compile_s"] = max(0.0, rec["first_call_s"] - rec["time"]["median_ms"] / 1e3)
            rec["compile"] = {"dynamic": False,
                              "unique_graphs": int(c["stats"].get("unique_graphs", 0)),
                              "graph_breaks": int(sum(c["graph_break"].values())),
                              "fxgraph_cache_hits": int(c["inductor"].get("fxgraph_cache_hit", 0)),
                              "fxgraph_cache_misses": int(c["inductor"].get("fxgraph_cache_miss", 0))}
        if case.floor is not None and self.ceilings is not None:
            rec["floor"] = floors.achieved(case.floor(floors.elem_bytes(self.dtype)),
                                           self.ceilings, rec["time"]["median_ms"])
        rec["status"] = "ok"

    def _finish_case(self, case: Case):
        self._pending[case.key] -= 1
        if self._pending[case.key] <= 0:
            self._ref_out.pop(case.key, None)

    # --- the whole run --------------------------------------------------------------------------
    def write_json(self) -> Path:
        path = self.out / "results.json"
        doc = {"meta": {**self.meta, "elapsed_s": time.perf_counter() - self.t0,
                        "ceilings": self.ceilings, "notes": self.notes},
               "records": self.records, "maxres": self.maxres}
        atomic_write_text(path, report.dumps(doc))
        return path

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        # everything imported so far lives for the whole run: keep it out of the many collections
        # made between runs (each would otherwise walk torch's and matplotlib's objects)
        gc.collect()
        gc.freeze()
        try:
            return self._run()
        finally:
            gc.unfreeze()

    def _run(self) -> dict:
        self.ceilings = floors.measure_ceilings(self.device, self.dtype, small=self.suite.width == "tiny")
        self.log(f"ceilings: copy {self.ceilings['bandwidth_Bps'] / 1e9:.1f} GB/s, matmul "
                 f"{self.ceilings['matmul_flops'] / 1e12:.3g} TFLOP/s ({self.dtype_name})")
        first, compile_ops, compile_models = self.plan()
        total = len(first) + len(compile_ops) + len(compile_models)
        i = 0
        for phase in (first, compile_ops, "maxres", compile_models):
            if phase == "maxres":
                self.run_maxres()
                continue
            for case, names in _groups(phase):
                for rec in self.run_group(case, names):
                    i += 1
                    self.records.append(rec)
                    self._finish_case(case)
                    self.log(report.log_line(i, total, rec))
                self.write_json()
        report.add_comparisons(self.records, self.maxres)
        self.meta["loadavg_end"] = _loadavg()
        self.meta["elapsed_s"] = time.perf_counter() - self.t0
        self.write_json()
        return {"meta": self.meta, "records": self.records, "maxres": self.maxres}

    def run_maxres(self):
        if not (self.do_maxres and self.suite.maxres_batches and self.device.type == "cuda"):
            return
        names = self.maxres_backends
        if names is None:
            names = [b for b in self.available["csa"] if b in self.available["clra"]]
        width = self.suite.width
        runs = [(b, False) for b in names]
        if self.suite.maxres_recompute:
            runs += [(b, True) for b in names if b not in ("reference", "compile")]
        for backend, recompute in runs:
            for batch in self.suite.maxres_batches:
                remaining = self._remaining()
                if remaining is not None and remaining < 60:
                    self.maxres.append({**self.env, "backend": backend, "batch": batch,
                                        "recompute": recompute, "status": "skipped",
                                        "error": "deadline"})
                    continue
                rec = maxres.search(self.device, self.dtype, backend, batch, width=width,
                                    cap=self.suite.maxres_cap, recompute=recompute,
                                    deadline=self.deadline, log=self.log)
                self.maxres.append({**self.env, **rec})
                self.write_json()


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available here", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = get_suite(args.suite, device)
    if args.repeats:
        suite = with_repeats(suite, args.repeats)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench/{device.type}-{suite.name}-{stamp}")
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    options = options_from(args)
    try:
        h = Harness(device, dtype, suite, out, backends=split(args.backends),
                    case_names=split(args.cases), deadline_s=args.deadline_s, options=options,
                    maxres=not args.no_maxres, maxres_backends=split(args.maxres_backends),
                    compile_where=args.compile, log=log,
                    command="python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv))
    except ValueError as e:   # an option the cases cannot take (--groups 5 for nf = 86)
        print(f"python -m benchmarks: {e}", file=sys.stderr)
        return 2
    for n in h.notes:
        log(f"note: {n}")
    doc = h.run()
    written = report.write_outputs(doc, out, plots=not args.no_plots, log=log)
    log(f"wrote {out}/results.json, " + ", ".join(p.name for p in written))
    if args.write_results:
        from . import results

        path = results.write_results([out / "results.json"], args.results_path, note=args.note)
        log(f"wrote {path}")
    gc.collect()
    bad = [r for r in doc["records"] if r.get("status") == "error"]
    return 2 if bad else 0
