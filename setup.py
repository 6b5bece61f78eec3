"""Package metadata of csakd_fast and the optional native extension ``csakd_fast._C``.

The extension has no dependency on torch's C++ ABI. Its sources are laid out per op: csrc/ holds
the pybind11 module (module.cpp) and the thread pool (parallel.h), csrc/<op>/ the CPU passes of an
op and kernels/<op>/ its CUDA passes (one op so far: csa); tools/ the build helpers. It is built
when a C++ compiler is there; the CUDA objects when ``nvcc`` is found and either a GPU is present
or ``CSAKD_BUILD_CUDA=1`` (``CSAKD_BUILD_CUDA=0``: never). Sources are compiled with ninja when it is on the PATH (incremental, header dependencies
tracked), else one by one. A failed build prints one line and leaves the package installable:
the ``cpp``/``cuda`` backends are then unavailable and the Python backends run.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

here = Path(__file__).parent.resolve()
sys.path.insert(0, str(here / "tools"))
from cuda_toolkit import cuda_paths, find_nvcc  # noqa: E402
version = re.search(r'__version__ = "([^"]+)"', (here / "csakd_fast" / "__init__.py").read_text()).group(1)

CPU_SOURCES = ["csrc/module.cpp", "csrc/csa/csa_cpu_base.cpp", "csrc/csa/csa_cpu_avx2.cpp"]
# one translation unit per pass family (kernels/csa/csa_cuda_common.cuh has what they share)
CUDA_SOURCES = ["kernels/csa/csa_cuda.cu", "kernels/csa/csa_cuda_gram.cu", "kernels/csa/csa_cuda_fwd.cu",
                "kernels/csa/csa_cuda_bwd1.cu", "kernels/csa/csa_cuda_bwd2.cu"]
CXXFLAGS = ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-ffp-contract=fast", "-Wall",
            "-Wno-psabi"]
# sm_80 and sm_90 machine code, and sm_90 PTX for newer GPUs to compile at load time
NVCC_ARCH = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
             "-gencode=arch=compute_90,code=compute_90"]
NVCCFLAGS = ["-O3", "-std=c++17", "-Xcompiler=-fPIC", "-Xcompiler=-fvisibility=hidden", "-lineinfo"]


def _gpu_present() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _want_cuda():
    """(build the CUDA objects?, why not)."""
    flag = os.environ.get("CSAKD_BUILD_CUDA", "")
    if flag == "0":
        return False, "CSAKD_BUILD_CUDA=0"
    nvcc = find_nvcc()
    if nvcc is None:
        return False, "no nvcc"
    if flag == "1" or _gpu_present():
        return True, ""
    return False, "no GPU (set CSAKD_BUILD_CUDA=1 to build the CUDA kernels anyway)"


class BuildNative(build_ext):
    """Builds ``csakd_fast._C``; on any failure prints one warning line and carries on."""

    def build_extensions(self):
        try:
            super().build_extensions()
        except Exception as e:  # a missing compiler, a compile error, …: the package stays usable
            lines = str(e).splitlines()
            first_error = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
            msg = " ".join(first_error.split())[:300]
            print(f"csakd_fast: WARNING: native extension not built ({type(e).__name__}: {msg}); "
                  f"the cpp/cuda backends are off", file=sys.stderr)
            self.extensions = []  # nothing to copy into the source tree or the wheel

    def build_extension(self, ext):
        import pybind11

        cuda, why = _want_cuda()
        cflags = CXXFLAGS + [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
        ldflags = ["-pthread"]
        tmp = Path(self.build_temp).resolve() / "csakd_native"
        tmp.mkdir(parents=True, exist_ok=True)
        # objects mirror the source tree (csrc/csa/x.cpp -> csrc/csa/x.cpp.o): no two ops collide
        jobs = [(here / s, tmp / (s + ".o"), "cxx") for s in ext.sources]
        if cuda:
            nvcc = find_nvcc()
            incs, libs = cuda_paths(nvcc)
            cflags += ["-DCSAKD_WITH_CUDA", *(f"-I{d}" for d in incs)]
            jobs += [(here / s, tmp / (s + ".o"), "nvcc") for s in CUDA_SOURCES]
            # the CUDA runtime linked statically: no libcudart.so needed where the module is loaded
            ldflags += [*(f"-L{d}" for d in libs), "-lcudart_static", "-ldl", "-lrt"]
            print(f"csakd_fast: building the CUDA kernels with {nvcc}", file=sys.stderr)
        else:
            print(f"csakd_fast: CUDA kernels not built ({why})", file=sys.stderr)
        for _, obj, _ in jobs:
            obj.parent.mkdir(parents=True, exist_ok=True)
        out = Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        cxx = os.environ.get("CXX", "c++")
        objects = [str(o) for _, o, _ in jobs]
        # OpenMP: the passes then run on the pool torch has already loaded (csrc/parallel.h); a
        # compiler without it builds the std::thread version
        omp = ["-fopenmp"] if _accepts(cxx, ["-fopenmp"], tmp) else []
        if not omp:
            print("csakd_fast: the C++ compiler takes no -fopenmp: std::thread build", file=sys.stderr)
        _compile(jobs, cflags + omp, tmp, nvcc=find_nvcc() if cuda else None)
        _run([cxx, "-shared", *objects, "-o", str(out), *ldflags, *omp])


def _accepts(cxx: str, flags, tmp: Path) -> bool:
    """Whether ``cxx`` compiles and links a shared object with ``flags``."""
    src = tmp / "probe.cpp"
    src.write_text("int probe() { return 0; }\n")
    r = subprocess.run([cxx, *flags, "-shared", "-fPIC", str(src), "-o", str(tmp / "probe.so")],
                       capture_output=True)
    return r.returncode == 0


def _run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:3])} … failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def _compile(jobs, cflags, tmp: Path, nvcc=None):
    """Compiles (source, object, kind) jobs: with ninja when present (parallel, incremental, header
    dependencies from the compiler's depfiles), else all at once on a pool of the machine's cores
    (the CUDA translation units take the longest; a machine without ninja still builds them side
    by side)."""
    cxx = os.environ.get("CXX", "c++")
    nvflags = NVCCFLAGS + NVCC_ARCH
    ninja = shutil.which("ninja")
    if ninja:
        q = lambda args: " ".join(shlex.quote(a) for a in args)  # noqa: E731
        lines = [f"cxx = {shlex.quote(cxx)}", f"cflags = {q(cflags)}",
                 "rule cxx", "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
                 "  depfile = $out.d", "  deps = gcc"]
        if nvcc:
            lines += [f"nvcc = {shlex.quote(nvcc)}", f"nvflags = {q(nvflags)}",
                      "rule nvcc", "  command = $nvcc -MD -MF $out.d $nvflags -c $in -o $out",
                      "  depfile = $out.d", "  deps = gcc"]
        lines += [f"build {shlex.quote(str(o))}: {kind} {shlex.quote(str(s))}" for s, o, kind in jobs]
        (tmp / "build.ninja").write_text("\n".join(lines) + "\n")
        _run([ninja, "-C", str(tmp)])
        return
    def one(job):
        src, obj, kind = job
        if kind == "cxx":
            _run([cxx, *cflags, "-c", str(src), "-o", str(obj)])
        else:
            _run([nvcc, *nvflags, "-c", str(src), "-o", str(obj)])

    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        list(pool.map(one, jobs))   # re-raises the first failure


setup(
    name="csakd_fast",
    version=version,
    description="CSAKD hyperspectral/multispectral fusion with fused Triton kernels",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["csakd_fast", "csakd_fast.*"]),
    ext_modules=[Extension("csakd_fast._C", CPU_SOURCES)],
    cmdclass={"build_ext": BuildNative},
    # earthlib and colour-science (the reference scenes' spectra, the camera SRF) need 3.11
    python_requires=">=3.11",
    # torch is installed first by the Makefile (a CPU build where that is what the machine has);
    # a bare `pip install torch` would pull a CUDA build of several GB.
    install_requires=[
        "torch>=2.4", "numpy>=1.23",
        "scipy>=1.10",                # .mat v5 (scipy.io); reference scenes: k-means, NNLS
        "h5py>=3.6",                  # .mat v7.3
        "tifffile>=2022.5.4",         # TIFF
        "spectral>=0.23",             # ENVI cubes and spectral libraries (MIT)
        "pillow>=9.1",                # per-band PNG folders (CAVE)
        # data read at run time from the packages that ship it (csakd_fast/data/):
        "pyrsr>=0.8",                 # Sentinel-2 / Landsat-8/9 SRF tables (Apache-2.0)
        "colour-science>=0.4.7",      # Nikon D5100 camera sensitivities, NPL (BSD-3-Clause)
        "earthlib>=1.1,<2",           # spectral library of the reference scenes (MIT)
        "spyndex>=0.12",              # real Sentinel-2 scene of the reference scenes (MIT)
        # training and reports (csakd_fast/training/)
        "tqdm>=4.60", "tensorboard>=2.10", "matplotlib>=3.5",
    ],
    package_data={"csakd_fast.training": ["presets/*.toml"]},
    entry_points={"console_scripts": ["csakd-fast = csakd_fast.cli:main"]},
    extras_require={
        "test": ["pytest>=7", "matplotlib>=3.5", "hypothesis>=6.100", "psutil>=5.9"],
        # ONNX export and its check in ONNX Runtime (csakd-fast export)
        "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
        "bench": ["matplotlib>=3.5"],
        "triton": ["triton>=3.0"],
    },
    license="MIT",
)
