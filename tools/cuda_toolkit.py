"""Where the CUDA toolkit is: shared by setup.py (the extension's build) and tools/ptxas_report.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path


def find_nvcc():
    """$CUDA_HOME/bin/nvcc, nvcc on the PATH, or /usr/local/cuda/bin/nvcc; None if none exists."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for cand in (Path(home) / "bin" / "nvcc" if home else None, shutil.which("nvcc"),
                 "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return str(cand)
    return None


def cuda_paths(nvcc: str):
    """(include dirs, library dirs) of the toolkit behind ``nvcc``, as nvcc itself reports them
    (nvcc may be a wrapper script outside the toolkit)."""
    out = subprocess.run([nvcc, "-dryrun", "-E", "-x", "cu", os.devnull], capture_output=True,
                         text=True).stderr
    inc = re.findall(r'-I"?([^"\s]+)', "".join(re.findall(r"INCLUDES=(.*)", out)))
    lib = re.findall(r'-L"?([^"\s]+)', "".join(re.findall(r"LIBRARIES=(.*)", out)))
    root = Path(nvcc).resolve().parents[1]
    return inc or [str(root / "include")], [d for d in lib if not d.endswith("stubs")] or [str(root / "lib64")]
