"""Two harness runs side by side, e.g. before and after a commit, on one machine.

    python -m benchmarks.compare OLD/results.json NEW/results.json [--threshold 0.1] [--fail]

Per (case, mode, res, batch, backend) measured in both runs: the two medians, new ÷ old (below 1:
faster), and each run's speedup over its own reference, a ratio within one run that drift of the
machine between the runs does not move. Rows more than ``--threshold`` slower are marked; with
``--fail`` the exit status is 1 when there is one. Records measured in one run only are counted.
"""
from __future__ import annotations

import argparse
from typing import Dict, List

from . import PRODUCER
from .report import BACKEND_ORDER, add_comparisons, load


def _index(doc: dict, source: str) -> Dict[tuple, dict]:
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("producer") != PRODUCER:
        raise ValueError(f"{source}: expected the JSON of a harness run (python -m benchmarks)")
    add_comparisons(doc["records"], doc.get("maxres") or [])
    return {(r["case"], r["mode"], r["res"], r["batch"], r["backend"]): r
            for r in doc["records"] if r.get("status") == "ok"}


def _order(key):
    backend = key[4]
    rank = BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER)
    return key[:4], rank, backend


def compare(old: dict, new: dict, threshold: float = 0.1) -> dict:
    """{"rows": [...], "only_old": n, "only_new": n, "notes": [...]} for two run documents."""
    a, b = _index(old, "OLD"), _index(new, "NEW")
    rows = []
    for key in sorted(set(a) & set(b), key=_order):
        ra, rb = a[key], b[key]
        ratio = rb["time"]["median_ms"] / ra["time"]["median_ms"]
        rows.append({"case": key[0], "mode": key[1], "res": key[2], "batch": key[3],
                     "backend": key[4], "old_ms": ra["time"]["median_ms"],
                     "new_ms": rb["time"]["median_ms"], "ratio": ratio,
                     "old_vs_ref": ra.get("speedup_vs_reference"),
                     "new_vs_ref": rb.get("speedup_vs_reference"),
                     "slower": ratio > 1 + threshold})
    notes = [f"{f}: {old['meta'].get(f)!r} then {new['meta'].get(f)!r}"
             for f in ("device_name", "dtype", "suite", "threads")
             if old["meta"].get(f) != new["meta"].get(f)]
    return {"rows": rows, "only_old": len(set(a) - set(b)), "only_new": len(set(b) - set(a)),
            "notes": notes}


def markdown(result: dict, threshold: float) -> str:
    def x(v):
        return "" if v is None else f"{v:.2f}×"

    out = [f"- note: the runs differ in {n}" for n in result["notes"]]
    out += ["| case | mode | res | B | backend | old ms | new ms | new ÷ old | old × ref | new × ref |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mark = f" **slower than {1 + threshold:.2f}×**" if r["slower"] else ""
        out.append(f"| {r['case']} | {r['mode']} | {r['res']} | {r['batch']} | {r['backend']} | "
                   f"{r['old_ms']:.4g} | {r['new_ms']:.4g} | {r['ratio']:.3f}{mark} | "
                   f"{x(r['old_vs_ref'])} | {x(r['new_vs_ref'])} |")
    out.append(f"\n{len(result['rows'])} in both runs; {result['only_old']} only in OLD, "
               f"{result['only_new']} only in NEW")
    return "\n".join(out)


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="results.json of the first run")
    p.add_argument("new", help="results.json of the second run")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="mark rows more than this fraction slower (default 0.1)")
    p.add_argument("--fail", action="store_true", help="exit status 1 when a row is marked")
    a = p.parse_args(argv)
    result = compare(load(a.old), load(a.new), a.threshold)
    print(markdown(result, a.threshold))
    if not result["rows"]:
        return 1
    return 1 if a.fail and any(r["slower"] for r in result["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
