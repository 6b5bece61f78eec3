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
    install_requires=["torch>=2.4", "numpy>=1.23"],
    extras_require={
        "test": ["pytest>=7", "matplotlib>=3.5"],
        "bench": ["matplotlib>=3.5", "pytest-benchmark>=4"],
        "triton": ["triton>=3.0"],
    },
    license="MIT",
)
