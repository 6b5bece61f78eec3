"""The build tooling (setup.py, CMakeLists.txt, tools/): a failed native build, the source lists."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_list(name: str):
    """A list literal of setup.py (CPU_SOURCES, CUDA_SOURCES), read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(name)


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
