"""The package's import structure: no import cycles, every module importable, a lazy namespace.

(a) The import graph is built statically: every ``import`` / ``from … import`` statement of every
    .py file under csakd_fast/, at any depth (function-level, lazy imports included, and those under
    ``if TYPE_CHECKING:``), relative imports resolved; ``from X import name`` is an edge to the
    module ``X.name`` when that is a module of the package, else to ``X``. Only edges between
    modules of csakd_fast count. A cycle is reported as a chain ``a -> b -> … -> a``.
(b) In a fresh interpreter, ``import csakd_fast`` and then every module that
    ``pkgutil.walk_packages`` finds, one test per module; a module may be skipped only when an
    optional dependency (``OPTIONAL``) is missing, and the skip says so.
"""
from __future__ import annotations

import ast
import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "csakd_fast"
PKG_DIR = ROOT / PACKAGE
# What a module may lack and still be skipped, with the reason; any other failure is an error.
# Modules that are not there (ImportError.name): Triton has no wheel on some platforms, the native
# extension csakd_fast._C is not built where there is no compiler (tests/test_native.py requires
# it under make test).
OPTIONAL = ("triton", f"{PACKAGE}._C")


# --- (a) the static import graph ------------------------------------------------------------------
def package_modules(pkg_dir: Path = PKG_DIR, package: str = PACKAGE) -> dict:
    """{dotted module name: source path or None (a compiled extension)} of every module under
    ``pkg_dir``: .py files (``__init__.py`` names its package) and extension modules."""
    mods = {}
    for path in sorted(pkg_dir.rglob("*")):
        rel = path.relative_to(pkg_dir.parent)
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        if path.suffix == ".py":
            parts = rel.with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = path
        else:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:   # longest first
                if path.name.endswith(suffix):
                    mods[".".join(rel.parts[:-1] + (path.name[:-len(suffix)],))] = None
                    break
    return mods


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[:-(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict, package: str = PACKAGE) -> dict:
    """{module: {imported module: [line numbers]}} over the modules of ``package``."""
    graph: dict = {m: {} for m in modules}

    def edge(src, dst, line):
        if dst in modules:
            graph[src].setdefault(dst, []).append(line)

    for mod, path in modules.items():
        if path is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        edge(mod, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(mod, is_package, node)
                if base != package and not base.startswith(package + "."):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edge(mod, sub if sub in modules else base, node.lineno)
    return graph


def find_cycles(graph: dict, limit: int = 100) -> list:
    """The elementary cycles of ``graph`` ({node: iterable of successors}), each as a list of
    nodes that starts at its smallest node (at most ``limit``, sorted)."""
    nodes = sorted(graph)
    index = {n: i for i, n in enumerate(nodes)}
    cycles = []
    for start in nodes:
        # cycles whose smallest node is ``start``: paths through larger nodes back to it
        stack = [(start, [start])]
        while stack and len(cycles) < limit:
            node, path = stack.pop()
            for nxt in sorted(graph[node], reverse=True):
                if nxt == start:
                    cycles.append(path + [start])
                elif index[nxt] > index[start] and nxt not in path:
                    stack.append((nxt, path + [nxt]))
    return sorted(cycles)


def _chain(cycle, graph) -> str:
    hops = [f"{a} (line {graph[a][b][0]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(hops + [cycle[-1]])


def test_the_cycle_finder_on_a_known_graph():
    g = {"a": ["b"], "b": ["c", "a"], "c": ["a"], "d": ["d"], "e": ["a"]}
    assert find_cycles(g) == [["a", "b", "a"], ["a", "b", "c", "a"], ["d", "d"]]
    assert find_cycles({"a": ["b"], "b": ["c"], "c": []}) == []


def test_the_import_graph_sees_lazy_relative_and_from_imports():
    modules = package_modules()
    graph = import_graph(modules)
    assert f"{PACKAGE}.training.log" in modules and f"{PACKAGE}.data" in modules
    # a function-level import (cli's subcommands import the engine lazily)
    assert f"{PACKAGE}.training.trainer" in graph[f"{PACKAGE}.cli"]
    # `from .. import _io` is an edge to the module _io, not to the package
    assert f"{PACKAGE}._io" in graph[f"{PACKAGE}.training.trainer"]
    # `from ..models import CSAKDNet` is an edge to the package csakd_fast.models
    assert f"{PACKAGE}.models" in graph[f"{PACKAGE}.training.trainer"]
    # `from .log import read_log` (report) resolves relative to the training package
    assert f"{PACKAGE}.training.log" in graph[f"{PACKAGE}.training.report"]
    assert f"{PACKAGE}.training.trainer" not in graph[f"{PACKAGE}.training.report"]
    # no edge leaves the package
    assert all(dst.split(".")[0] == PACKAGE for edges in graph.values() for dst in edges)


def test_no_import_cycles():
    graph = import_graph(package_modules())
    cycles = find_cycles(graph)
    assert not cycles, ("import cycles in csakd_fast:\n  "
                        + "\n  ".join(_chain(c, graph) for c in cycles))


# --- (b) every module imports in a fresh interpreter ----------------------------------------------
_IMPORT_ALL = r"""
import contextlib, importlib, io, json, pkgutil, sys, traceback
optional = json.loads(sys.argv[1])
results = {}

def classify(name, e):
    if isinstance(e, ImportError):
        missing = e.name or ""
        if any(missing == o or missing.startswith(o + ".") for o in optional):
            return f"skip: the optional dependency {missing} is missing ({type(e).__name__}: {e})"
    return "error: " + "".join(traceback.format_exception(e)).strip()

import csakd_fast
for info in pkgutil.walk_packages(csakd_fast.__path__, "csakd_fast.",
                                  onerror=lambda name: results.setdefault(name, classify(name, sys.exc_info()[1]))):
    name = info.name
    if name in results:
        continue
    try:
        if name == "csakd_fast.__main__":   # runs the command: give it --help
            sys.argv = ["csakd-fast", "--help"]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    importlib.import_module(name)
                except SystemExit as e:
                    if e.code not in (0, None):
                        raise RuntimeError(f"`python -m csakd_fast --help` exited with {e.code}")
        else:
            importlib.import_module(name)
        results[name] = "ok"
    except BaseException as e:
        results[name] = classify(name, e)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def imported():
    r = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(OPTIONAL)],
                       capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert r.returncode == 0 and lines, f"the import subprocess failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1][len("RESULTS "):])


def test_walk_packages_finds_every_module(imported):
    """The modules the fresh interpreter imported are the ones on disk (nothing left out)."""
    on_disk = set(package_modules()) - {PACKAGE}
    assert set(imported) == on_disk


@pytest.mark.parametrize("module", sorted(set(package_modules()) - {PACKAGE}))
def test_every_module_imports_in_a_fresh_interpreter(module, imported):
    status = imported.get(module, "error: not found by pkgutil.walk_packages")
    if status.startswith("skip: "):
        pytest.skip(f"{module}: {status[len('skip: '):]}")
    assert status == "ok", f"{module}: {status}"


# --- the lazy namespace ---------------------------------------------------------------------------
def test_the_lazy_namespace_gives_the_public_names():
    code = r"""
import sys
import csakd_fast as cf
assert "torch" not in sys.modules
public = ["CSAKDConfig", "CSAKDNet", "load_checkpoint", "save_checkpoint", "nn", "ops", "losses",
          "metrics", "backends", "data", "__version__"]
assert cf.__all__ == public, cf.__all__
assert set(public) <= set(dir(cf))
from csakd_fast import backends, CSAKDNet
import csakd_fast.models
assert cf.CSAKDNet is CSAKDNet is csakd_fast.models.CSAKDNet and cf.backends is backends
assert cf.load_checkpoint is csakd_fast.models.load_checkpoint
assert cf.save_checkpoint is csakd_fast.models.checkpoint.save_checkpoint
assert cf.CSAKDConfig is csakd_fast.models.config.CSAKDConfig
layer = cf.nn.CrossSelfAttention(channels=8, attn_dim=4, heads=2)
assert type(layer).__module__.startswith("csakd_fast.nn.")
assert cf.ops.cross_self_attention and cf.losses.sam_loss and cf.metrics.psnr and cf.data.FusionDataset
assert cf.__version__ == "0.1.0"
try:
    cf.no_such_name
except AttributeError as e:
    assert "no_such_name" in str(e)
else:
    raise AssertionError("no AttributeError")
ns = {}
exec("from csakd_fast import *", ns)
assert set(public) - {"__version__"} <= set(ns), sorted(ns)
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
