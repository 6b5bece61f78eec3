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
    python_requires=">=3.9",
    # torch is installed first by the Makefile (a CPU build where that is what the machine has);
    # a bare `pip install torch` would pull a CUDA build of several GB.
    # The data pipeline's readers/writers: scipy (.mat v5, via scipy.io), h5py (.mat v7.3),
    # tifffile (TIFF), spectral (ENVI), Pillow (per-band PNG folders, CAVE).
    install_requires=["torch>=2.4", "numpy>=1.23", "scipy>=1.9", "h5py>=3.6", "tifffile>=2022.5.4",
                      "spectral>=0.23", "pillow>=9.1"],
    extras_require={
        "test": ["pytest>=7"],
        "triton": ["triton>=3.0"],
    },
    license="MIT",
)
