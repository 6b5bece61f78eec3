"""The fused CLRA block op (docs/design.md, "The fused CLRA").

Files: ``reference`` (the public code's eager formulation, the baseline), ``op`` (the
``csakd_fast::clra_fwd``/``clra_bwd`` custom ops with their autograd rule, the argument checks,
the front door :func:`clra`), and one module per backend: ``impl_torch`` (growth buffers on aten
convolutions and the hand-written backward every fused backend shares) and ``impl_triton`` (the
implicit-GEMM kernel with fused epilogues and its launcher).

Importing this package registers every implementation with :mod:`csakd_fast.backends`; one that
cannot be imported (Triton not installed) is recorded as unavailable with the reason.
"""
from ... import backends
from . import impl_torch
from .op import clra
from .reference import clra_reference

backends.register(backends.Impl("clra", "reference", clra_reference, dtypes=impl_torch.IMPL.dtypes))
backends.register(impl_torch.IMPL)
try:
    from . import impl_triton
except ImportError as e:   # no Triton wheel for this platform
    backends.unavailable("clra", "triton", f"Triton is not importable ({type(e).__name__}: {e})")
else:
    backends.register(impl_triton.IMPL)

__all__ = ["clra", "clra_reference"]
