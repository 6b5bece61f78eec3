"""The fused cross self-attention (CSA) op (docs/design.md, "The fused CSA").

Files: ``reference`` (the public code's eager formulation, the baseline), ``op`` (the parameter
objects, the ``csakd_fast::csa_fwd``/``csa_bwd`` custom ops with their autograd rule, the front
door :func:`cross_self_attention`), ``algebra`` (the per-sample small matrices every fused
backend shares), and one module per backend: ``impl_torch``, ``impl_triton`` (+ its kernels,
``triton_kernels``), ``impl_cpp`` and ``impl_cuda`` (+ their shared ``impl_native``).

Importing this package registers every implementation with :mod:`csakd_fast.backends`; one that
cannot be imported (Triton not installed) is recorded as unavailable with the reason.
"""
from ... import backends
from . import impl_cpp, impl_cuda, impl_torch
from .op import ATTENTIONS, CSASpec, CSAWeights, cross_self_attention
from .reference import csa_reference

backends.register(backends.Impl("csa", "reference", csa_reference,
                                dtypes=impl_torch.IMPL.dtypes))
backends.register(impl_torch.IMPL)
backends.register(impl_cpp.IMPL)
backends.register(impl_cuda.IMPL)
try:
    from . import impl_triton
except ImportError as e:   # no Triton wheel for this platform
    backends.unavailable("csa", "triton", f"Triton is not importable ({type(e).__name__}: {e})")
else:
    backends.register(impl_triton.IMPL)

__all__ = ["cross_self_attention", "csa_reference", "CSAWeights", "CSASpec", "ATTENTIONS"]
