"""The fused computations of CSAKD, one op each, dispatched over backends (design.md §6).

``cross_self_attention`` is the fusion module (design.md §3); ``clra`` one CLRA block (§4).
Each backend implements the same signature; ``reference`` is the eager formulation of the
public code and the baseline every other backend is tested against.
"""
from .dispatch import clra, cross_self_attention

__all__ = ["cross_self_attention", "clra"]
