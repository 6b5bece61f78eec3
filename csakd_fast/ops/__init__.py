"""The fused computations of CSAKD, one package per op (docs/design.md, "Ops"):

- :mod:`csakd_fast.ops.csa`: the cross self-attention fusion module, :func:`cross_self_attention`;
- :mod:`csakd_fast.ops.clra`: one CLRA block, :func:`clra`;
- :mod:`csakd_fast.ops.pixels`: the pixel-grid helpers they share.

Each op package holds its eager reference, its custom op (schema + autograd rule) and one module
per backend, and registers its implementations with :mod:`csakd_fast.backends` when imported.
"""
from .clra import clra
from .csa import cross_self_attention

__all__ = ["cross_self_attention", "clra"]
