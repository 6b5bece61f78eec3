"""(Re)write ``benchmarks/RESULTS.md`` from the JSON of harness runs.

    python -m benchmarks.results RUN/results.json [MORE/results.json ...] [--note TEXT]

One section per device (its name and the run's date), holding one block per (dtype, suite) run;
writing a run replaces the block of the same device, dtype and suite and keeps every other one.
Only JSON written by ``python -m benchmarks`` is accepted, and only records that carry their
device information (``benchmarks.env.REQUIRED``): a number appears in RESULTS.md only if the
harness produced it. The run's plots (time.png, memory.png beside the JSON) are copied to
``benchmarks/results/`` and linked.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Iterable, List, Optional

from csakd_fast._io import atomic_path, atomic_write_text

from . import PRODUCER, SCHEMA
from .env import REQUIRED
from .report import add_comparisons, describe_run, load, markdown_tables

HERE = Path(__file__).resolve().parent
DEFAULT_PATH = HERE / "RESULTS.md"

HEADER = """# Benchmark results

Every number on this page was measured by the benchmark harness (`python -m benchmarks`) on the
device its section names, and copied here from the run's JSON by `python -m benchmarks.results`;
nothing is typed in by hand. How the numbers are taken (medians, warm-up, rotated inputs, bytes
saved for backward over unique storages, the floors of docs/design.md, "Measuring", against
ceilings measured in the same run) is described in `benchmarks/__init__.py` and the modules it
lists.

Reproduce: `make bench` (CPU, quick suite, ≤ 5 minutes on 2 cores) or
`python -m benchmarks --device cpu --suite quick --write-results`; on a machine with a CUDA GPU,
`bash benchmarks/gpu_check.sh OUTDIR` then `python -m benchmarks.results OUTDIR/results.json`.
"""

_DEV = re.compile(r"<!-- device: (?P<slug>[\w.-]+) -->\n(?P<body>.*?)<!-- /device: (?P=slug) -->\n?", re.S)
_RUN = re.compile(r"<!-- run: (?P<key>[\w./-]+) -->\n(?P<body>.*?)<!-- /run: (?P=key) -->\n?", re.S)


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower()
    return s or "unknown"


def validate(doc, source="results.json", allow_smoke: bool = False) -> None:
    """Refuse anything the harness did not write or that lacks device information (and, unless
    ``allow_smoke``, runs of the smoke suite, whose networks are toy-sized)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("records"), list):
        raise ValueError(f"{source}: expected the harness's JSON ({{'meta': ..., 'records': [...]}}), "
                         f"got {type(doc).__name__} with keys {sorted(doc) if isinstance(doc, dict) else '-'}")
    meta = doc["meta"]
    if meta.get("producer") != PRODUCER:
        raise ValueError(f"{source}: meta.producer: expected {PRODUCER!r} (a run of python -m benchmarks), "
                         f"got {meta.get('producer')!r}")
    if meta.get("schema") != SCHEMA:
        raise ValueError(f"{source}: meta.schema: expected {SCHEMA}, got {meta.get('schema')!r}")
    for f in REQUIRED + ("suite",):
        if meta.get(f) in (None, ""):
            raise ValueError(f"{source}: meta.{f}: expected the run's {f}, got {meta.get(f)!r}")
    if meta["suite"] == "smoke" and not allow_smoke:
        raise ValueError(f"{source}: meta.suite: expected 'quick' or 'full' (the smoke suite times "
                         f"toy-sized networks), got 'smoke'")
    for i, r in enumerate(doc["records"]):
        for f in REQUIRED:
            if r.get(f) in (None, ""):
                raise ValueError(f"{source}: records[{i}] ({r.get('case')} {r.get('backend')}): "
                                 f"{f}: expected the device information, got {r.get(f)!r}")
        if r["device_name"] != meta["device_name"] or r["device"] != meta["device"]:
            raise ValueError(f"{source}: records[{i}]: device_name: expected {meta['device_name']!r} "
                             f"(the run's), got {r['device_name']!r}")
    if not any(r.get("status") == "ok" for r in doc["records"]):
        raise ValueError(f"{source}: records: expected at least one measured (status 'ok') record, "
                         f"got {len(doc['records'])} records and none measured")


def _run_block(doc, plot_links: List[str], note: Optional[str]) -> str:
    meta = doc["meta"]
    parts = [f"### {meta['dtype']}, suite `{meta['suite']}` — measured {meta['date']}\n",
             describe_run(meta)]
    if note:
        parts.append(f"- note by whoever ran it: {note}\n")
    if plot_links:
        parts.append(" ".join(f"![{Path(p).stem}]({p})" for p in plot_links) + "\n")
    parts.append(markdown_tables(doc, level=4))
    return "\n".join(parts)


def _parse(text: str) -> dict:
    devices = {}
    for m in _DEV.finditer(text):
        body = m.group("body")
        title = body.splitlines()[0] if body else ""
        devices[m.group("slug")] = {"title": title,
                                    "runs": {r.group("key"): r.group("body") for r in _RUN.finditer(body)}}
    return devices


def _render(devices: dict) -> str:
    out = [HEADER]
    for s in sorted(devices):
        d = devices[s]
        out.append(f"<!-- device: {s} -->\n{d['title']}\n")
        for key in sorted(d["runs"]):
            out.append(f"<!-- run: {key} -->\n{d['runs'][key].rstrip()}\n<!-- /run: {key} -->\n")
        out.append(f"<!-- /device: {s} -->\n")
    return "\n".join(out)


def write_results(json_paths: Iterable, path=None, note: Optional[str] = None,
                  allow_smoke: bool = False) -> Path:
    path = Path(path or DEFAULT_PATH)
    docs = []
    for p in json_paths:
        doc = load(p)
        validate(doc, str(p), allow_smoke=allow_smoke)
        docs.append((Path(p), doc))
    devices = _parse(path.read_text()) if path.exists() else {}
    for p, doc in docs:
        meta = doc["meta"]
        add_comparisons(doc["records"], doc.get("maxres") or [])
        dev = slug(f"{meta['device']}-{meta['device_name']}")
        run_key = f"{dev}/{meta['dtype']}/{meta['suite']}"
        links = []
        for name in ("time.png", "memory.png"):
            src = p.parent / name
            if src.exists():
                dst = path.parent / "results" / f"{dev}-{meta['dtype']}-{meta['suite']}-{name}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dst, suffix=".png") as tmp:
                    shutil.copyfile(src, tmp)
                links.append(dst.relative_to(path.parent).as_posix())
        entry = devices.setdefault(dev, {"title": "", "runs": {}})
        entry["title"] = f"## {meta['device_name']} ({meta['device']}) — latest run {meta['date']}"
        entry["runs"][run_key] = _run_block(doc, links, note)
    atomic_write_text(path, _render(devices))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.results", description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", help="results.json of one or more harness runs")
    p.add_argument("--path", default=None, help=f"default {DEFAULT_PATH}")
    p.add_argument("--note", default=None, help="a line added to the run's block (e.g. 'machine shared')")
    p.add_argument("--allow-smoke", action="store_true", help="accept runs of the smoke suite")
    a = p.parse_args(argv)
    print(f"wrote {write_results(a.json, a.path, note=a.note, allow_smoke=a.allow_smoke)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
