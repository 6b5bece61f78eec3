"""Package metadata of csakd_fast (and, from the native-extension issue on, its optional build)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "csakd_fast" / "__init__.py").read_text()).group(1)

setup(
    name="csakd_fast",
    version=version,
    description="CSAKD hyperspectral/multispectral fusion with fused Triton kernels",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["csakd_fast", "csakd_fast.*"]),
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
        "test": ["pytest>=7", "matplotlib>=3.5"],
        "bench": ["matplotlib>=3.5", "pytest-benchmark>=4"],
        "triton": ["triton>=3.0"],
    },
    license="MIT",
)
