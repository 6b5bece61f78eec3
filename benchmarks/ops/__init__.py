"""The op cases of the harness: one module per fused op, with that op's cases only.

- :mod:`benchmarks.ops.csa`: ``csa`` (the paper's attention) and ``csa_normalized`` (or one case
  per ``--attention`` mode), with the CSA's floor;
- :mod:`benchmarks.ops.clra`: ``clra``, ``clra_g<groups>`` and their ``_recompute`` variants, the
  ``triton/dgrad`` variant of the Triton backend on CUDA, with the CLRA's floor.

Each module defines ``cases(request: benchmarks.cases.Request) -> list[benchmarks.cases.Case]``.
A new op adds its module to ``MODULES`` (and its families' points to ``benchmarks.cases.SUITES``).
"""
from __future__ import annotations

from typing import List

from ..cases import Case, Request
from . import clra, csa

MODULES = (csa, clra)


def cases(request: Request) -> List[Case]:
    """Every op module's cases, in ``MODULES`` order."""
    return [c for module in MODULES for c in module.cases(request)]
