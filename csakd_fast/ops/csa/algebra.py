"""The per-sample small-matrix algebra of the fused CSA, forward and hand-written backward.

Every fused backend (``impl_torch``, ``impl_triton``, ``impl_native`` for cpp and cuda) reduces
the pixels to a few small per-sample matrices (pass 1), hands them to :func:`forward`
here, applies the C×C matrix it gets back to every pixel (pass 2), and in backward reduces the
pixels to (dM, dc) and hands those to :func:`backward`, which returns the weight gradients and the
small matrices E that give the q/k-path input gradients. Nothing here touches a pixel; all of it
is O(C²·D) per sample.

Notation (docs/design.md, "The fused CSA"), per sample: X_i ∈ R^{C×N}, N = H·W, D = heads·d
rows of q, k, v.

Statistics of pass 1 (:func:`stats_shapes`; float64 for float64 inputs, else float32):

- ``paper``:      gram = G = X1 X2ᵀ (C, C); vecs = [s1, s2] = [X1·1, X2·1] (2, C); proj empty.
- ``normalized``: gram = Gc = X1c X2cᵀ with X_ic = X_i − m_i 1ᵀ centred over the pixels;
                  vecs = [m1, m2] (the channel means); proj = [Wq G11c, Wk G22c] (2, D, C) with
                  G11c = X1c X1cᵀ, G22c = X2c X2cᵀ (only their products with Wq, Wk are needed,
                  and D·C < C² keeps the saved bytes down).
- ``legacy``:     nothing (the attention does not depend on the pixels).

Logits, per head h (rows R_h of D):

- ``paper``:      L_h = Ŵq_h Ĝ Ŵk_hᵀ / √d,  Ŵ = [W | b] (D, C+1), Ĝ = [[G, s1], [s2ᵀ, N]]
- ``normalized``: L_h = τ_h · cov_h / (ñq ñkᵀ),  cov = Wq Gc Wkᵀ,
                  ñq = max(√diag(Wq G11c Wqᵀ), eps) (likewise ñk): exactly F.normalize's
                  ``x / max(‖x‖, eps)`` applied to the centred tokens, eps = NORM_EPS = 1e-12;
                  as in torch, the norm's gradient passes only where ‖x‖ ≥ eps.

The centred Grams are formed from explicitly centred data (channel means first, then the Gram of
x − m), never as G − N·m mᵀ, so the correlations keep their precision when the channel means are
large against the spread. For a token whose centred norm is (near) zero the reference's norm comes
from the token itself, ours from the quadratic form diag(Wq G11c Wqᵀ) (clamped at 0 before the
square root); both then take the eps branch and agree up to rounding.

A = softmax(L) (``legacy``: A = all-ones d×d blocks), and the pixel map is affine:
att = M X3 + c 1ᵀ + X4, M = Wo blockdiag(A) Wv (C, C), c = Wo blockdiag(A) bv + bo (C).

Backward: given dM = Σ_p d_att_p x3_pᵀ and dc = Σ_p d_att_p, :func:`backward` returns the weight
gradients (summed over the batch) and, for the input gradients, per sample

    dx1_p += E12 x2_p + E11 x1_p + e1,    dx2_p += E12ᵀ x1_p + E22 x2_p + e2

(``paper``: E11 = E22 = 0; ``legacy``: no such term).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

ATTENTIONS = ("paper", "legacy", "normalized")
NORM_EPS = 1e-12  # floor on a token's centred norm in the "normalized" attention


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Small matrices and pixel reductions are float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def stats_shapes(B: int, C: int, D: int, attention: str):
    """Shapes of (gram, proj, vecs), the pass-1 statistics saved for backward."""
    if attention == "paper":
        return (B, C, C), (B, 0, D, C), (B, 2, C)
    if attention == "normalized":
        return (B, C, C), (B, 2, D, C), (B, 2, C)
    return (B, 0, C), (B, 0, D, C), (B, 0, C)


class Small(NamedTuple):
    """Forward products: M (B, C, C), c (B, C) and what backward re-derives its gradients from."""
    M: torch.Tensor
    c: torch.Tensor
    A: Optional[torch.Tensor]       # (B, h, d, d) softmax, None for legacy
    AW: torch.Tensor                # blockdiag(A) Wv, (B, D, C) ((1, D, C) for legacy)
    Abv: torch.Tensor               # blockdiag(A) bv, (B, D) ((1, D) for legacy)
    extra: tuple                    # mode-specific intermediates


def _hat(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([w, b[:, None]], 1)


def _ghat(G: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, N: int) -> torch.Tensor:
    """Ĝ = [[G, s1], [s2ᵀ, N]]: the Gram of [X1; 1ᵀ] and [X2; 1ᵀ], (B, C+1, C+1)."""
    B = G.shape[0]
    top = torch.cat([G, s1[:, :, None]], 2)
    corner = torch.full((B, 1, 1), float(N), dtype=G.dtype, device=G.device)
    return torch.cat([top, torch.cat([s2[:, None, :], corner], 2)], 1)


def _bilinear_blocks(wa: torch.Tensor, G: torch.Tensor, wb: torch.Tensor, heads: int):
    """Per-head diagonal blocks of wa G wbᵀ: (B, h, d, d); also returns T = G wbᵀ, (B, K, D)."""
    D, K = wa.shape
    d = D // heads
    T = G @ wb.T
    return torch.einsum("hik,bkhj->bhij", wa.view(heads, d, K), T.view(-1, K, heads, d)), T


def forward(w, gram, proj, vecs, heads: int, attention: str, N: int) -> Small:
    """Logits, softmax and the affine pixel map (M, c); see the module docstring. ``w``: the
    :class:`csakd_fast.ops.csa.op.CSAWeights` in the compute dtype."""
    D, C = w.wv.shape
    d = D // heads
    if attention == "legacy":
        AW = w.wv.view(heads, d, C).sum(1, keepdim=True).expand(heads, d, C).reshape(1, D, C)
        Abv = w.bv.view(heads, d).sum(1, keepdim=True).expand(heads, d).reshape(1, D)
        B = gram.shape[0]
        return Small((w.wo @ AW).expand(B, C, C), (Abv @ w.wo.T + w.bo).expand(B, C),
                     None, AW, Abv, ())
    if attention == "paper":
        qh, kh = _hat(w.wq, w.bq), _hat(w.wk, w.bk)
        Gh = _ghat(gram, vecs[:, 0], vecs[:, 1], N)
        qk, _ = _bilinear_blocks(qh, Gh, kh, heads)
        A = torch.softmax(qk / math.sqrt(d), dim=-1)
        extra = (qh, kh, Gh)
    else:
        cov, _ = _bilinear_blocks(w.wq, gram, w.wk, heads)
        nq = (proj[:, 0] * w.wq).sum(-1).clamp_min(0).sqrt()          # (B, D)
        nk = (proj[:, 1] * w.wk).sum(-1).clamp_min(0).sqrt()
        nqt, nkt = nq.clamp_min(NORM_EPS), nk.clamp_min(NORM_EPS)
        chat = cov / (nqt.view(-1, heads, d, 1) * nkt.view(-1, heads, 1, d))
        A = torch.softmax(chat * w.temperature.view(1, heads, 1, 1), dim=-1)
        extra = (chat, nq, nk, nqt, nkt)
    B = A.shape[0]
    AW = torch.einsum("bhij,hjc->bhic", A, w.wv.view(heads, d, C)).reshape(B, D, C)
    Abv = torch.einsum("bhij,hj->bhi", A, w.bv.view(heads, d)).reshape(B, D)
    return Small(w.wo @ AW, Abv @ w.wo.T + w.bo, A, AW, Abv, extra)


class Grads(NamedTuple):
    """Weight gradients (batch-summed, compute dtype) and the per-sample q/k-path matrices."""
    wq: torch.Tensor
    bq: torch.Tensor
    wk: torch.Tensor
    bk: torch.Tensor
    wv: torch.Tensor
    bv: torch.Tensor
    wo: torch.Tensor
    bo: torch.Tensor
    tau: Optional[torch.Tensor]
    E12: Optional[torch.Tensor]     # (B, C, C)
    E11: Optional[torch.Tensor]     # (B, C, C), normalized only
    E22: Optional[torch.Tensor]
    e1: Optional[torch.Tensor]      # (B, C)
    e2: Optional[torch.Tensor]


def backward(dM: torch.Tensor, dc: torch.Tensor, w, small: Small, gram, proj, vecs,
             heads: int, attention: str) -> Grads:
    """Gradients of everything upstream of (M, c), given dM (B, C, C) and dc (B, C)."""
    D, C = w.wv.shape
    d = D // heads
    AW, Abv = small.AW, small.Abv
    if attention == "legacy":
        AW, Abv = AW[0], Abv[0]
        dwo = dM.sum(0) @ AW.T + dc.sum(0)[:, None] * Abv[None, :]
    else:
        dwo = torch.einsum("bcx,bdx->cd", dM, AW) + dc.T @ Abv
    dbo = dc.sum(0)
    dAW = (w.wo.T @ dM).view(-1, heads, d, C)                    # (B, h, d, C)
    dAbv = (dc @ w.wo).view(-1, heads, d)                        # (B, h, d)
    zeros = lambda t: torch.zeros_like(t)  # noqa: E731
    if attention == "legacy":
        # blockdiag(ones): every row of a head receives the head's summed gradient
        dwv = dAW.sum((0, 2))[:, None, :].expand(heads, d, C).reshape(D, C)
        dbv = dAbv.sum((0, 2))[:, None].expand(heads, d).reshape(D)
        return Grads(zeros(w.wq), zeros(w.bq), zeros(w.wk), zeros(w.bk), dwv, dbv, dwo, dbo,
                     None, None, None, None, None, None)
    A = small.A
    dwv = torch.einsum("bhij,bhic->hjc", A, dAW).reshape(D, C)
    dbv = torch.einsum("bhij,bhi->hj", A, dAbv).reshape(D)
    dA = (torch.einsum("bhic,hjc->bhij", dAW, w.wv.view(heads, d, C))
          + dAbv[..., :, None] * w.bv.view(1, heads, 1, d))
    dL = A * (dA - (dA * A).sum(-1, keepdim=True))             # softmax backward
    if attention == "paper":
        qh, kh, Gh = small.extra
        dS = dL / math.sqrt(d)                                   # (B, h, d, d)
        K = C + 1
        dqh = torch.einsum("bhij,bhjk->hik", dS, (Gh @ kh.T).transpose(1, 2).reshape(-1, heads, d, K))
        dkh = torch.einsum("bhij,bhik->hjk", dS, (qh @ Gh).view(-1, heads, d, K))
        U = torch.einsum("bhij,hjk->bhik", dS, kh.view(heads, d, K)).reshape(-1, D, K)
        dGh = qh.T @ U                                           # (B, C+1, C+1)
        return Grads(dqh.reshape(D, K)[:, :C], dqh.reshape(D, K)[:, C],
                     dkh.reshape(D, K)[:, :C], dkh.reshape(D, K)[:, C],
                     dwv, dbv, dwo, dbo, None,
                     dGh[:, :C, :C], None, None, dGh[:, :C, C], dGh[:, C, :C])
    chat, nq, nk, nqt, nkt = small.extra
    B = A.shape[0]
    dtau = (dL * chat).sum((0, 2, 3))
    dchat = dL * w.temperature.view(1, heads, 1, 1)
    dcov = dchat / (nqt.view(B, heads, d, 1) * nkt.view(B, heads, 1, d))
    t = dchat * chat
    # d‖·‖ through max(‖·‖, eps) (passes where ‖·‖ ≥ eps, as clamp_min does), then d(‖·‖²)
    a1 = torch.where(nq >= NORM_EPS, -t.sum(-1).reshape(B, D) / nqt / (2 * nqt), 0.0)
    a2 = torch.where(nk >= NORM_EPS, -t.sum(-2).reshape(B, D) / nkt / (2 * nkt), 0.0)
    Gc = gram
    dwq = torch.einsum("bhij,bhjc->hic", dcov, (Gc @ w.wk.T).transpose(1, 2).reshape(B, heads, d, C))
    dwq = dwq.reshape(D, C) + 2 * (a1[:, :, None] * proj[:, 0]).sum(0)
    dwk = torch.einsum("bhij,bhic->hjc", dcov, (w.wq @ Gc).view(B, heads, d, C))
    dwk = dwk.reshape(D, C) + 2 * (a2[:, :, None] * proj[:, 1]).sum(0)
    U = torch.einsum("bhij,hjc->bhic", dcov, w.wk.view(heads, d, C)).reshape(B, D, C)
    E12 = w.wq.T @ U
    E11 = 2 * (w.wq.T * a1[:, None, :]) @ w.wq
    E22 = 2 * (w.wk.T * a2[:, None, :]) @ w.wk
    m1, m2 = vecs[:, 0], vecs[:, 1]
    # centring: dx1_p gets E12 (x2_p − m2) + E11 (x1_p − m1); the means' own gradients vanish
    # because the centred rows sum to zero over the pixels
    e1 = -(E12 @ m2[:, :, None] + E11 @ m1[:, :, None])[..., 0]
    e2 = -(E12.transpose(1, 2) @ m1[:, :, None] + E22 @ m2[:, :, None])[..., 0]
    return Grads(dwq, zeros(w.bq), dwk, zeros(w.bk), dwv, dbv, dwo, dbo, dtau,
                 E12, E11, E22, e1, e2)
