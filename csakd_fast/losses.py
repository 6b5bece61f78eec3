"""Training losses of CSAKD (docs/design.md, "The network"), images (B, L, H, W).

Teacher:  SmoothL1(ŷ, y) + 0.1·SAM(ŷ, y) + 0.1·BandWise(ŷ, y)
Student:  SmoothL1(ŝ, y) + 0.1·SmoothL1(ŝ, ŷ_T) + 0.1·BCEWithLogits(f_s, σ(f_T))
          + 0.1·BandWise(ŝ, y) + 0.1·SAM(ŝ, y),   teacher terms detached.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from . import _checks

SAM_EPS = 1e-8


def _pair(pred, target, pred_name="pred", target_name="target"):
    _checks.tensor(pred_name, pred, 4)
    _checks.tensor(target_name, target, 4)
    _checks.same_shape((target_name, pred_name), (target, pred))
    _checks.same_device_dtype((target_name, pred_name), (target, pred))
    _checks.finite(pred_name, pred)
    _checks.finite(target_name, target)


def _weights(**weights) -> None:
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {w!r}")


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over all elements of smoothL1_β=1(pred − target): ½e² for |e| < 1, |e| − ½ otherwise."""
    _pair(pred, target)
    return F.smooth_l1_loss(pred, target, beta=1.0)


def sam_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = SAM_EPS) -> torch.Tensor:
    """1 − mean over the B·H·W pixels of cos(ŷ_p, y_p) = ⟨ŷ_p, y_p⟩ / (‖ŷ_p‖·‖y_p‖ + eps)."""
    _pair(pred, target)
    num = (pred * target).sum(1)
    den = pred.norm(dim=1) * target.norm(dim=1) + eps
    return 1 - (num / den).mean()


def band_wise_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Band-energy-balance-aware loss: for each sample b and band l,
    mean_pixels smoothL1_β=1(ŷ − y) / mean_pixels(y² + 0.1); then the mean over b and l.
    Weak bands (low energy) weigh as much as strong ones."""
    _pair(pred, target)
    err = F.smooth_l1_loss(pred, target, beta=1.0, reduction="none").mean((2, 3))
    energy = (target * target + 0.1).mean((2, 3))
    return (err / energy).mean()


def kd_response_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor) -> torch.Tensor:
    """SmoothL1(ŝ, ŷ_T) with the teacher output detached."""
    _pair(student_pred, teacher_pred, "student_pred", "teacher_pred")
    return F.smooth_l1_loss(student_pred, teacher_pred.detach(), beta=1.0)


def feature_bce_loss(fused: torch.Tensor, teacher_fused: torch.Tensor) -> torch.Tensor:
    """BCEWithLogits(f_s, σ(f_T)) over the fused feature maps, the teacher's detached."""
    _pair(fused, teacher_fused, "fused", "teacher_fused")
    return F.binary_cross_entropy_with_logits(fused, torch.sigmoid(teacher_fused.detach()))


def teacher_loss(pred: torch.Tensor, target: torch.Tensor, *, sam_weight: float = 0.1,
                 band_weight: float = 0.1) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Teacher objective; returns (total, {term: detached value})."""
    _weights(sam_weight=sam_weight, band_weight=band_weight)
    terms = {"l1": smooth_l1_loss(pred, target), "sam": sam_loss(pred, target),
             "band": band_wise_loss(pred, target)}
    total = terms["l1"] + sam_weight * terms["sam"] + band_weight * terms["band"]
    return total, {**{k: v.detach() for k, v in terms.items()}, "total": total.detach()}


def student_loss(pred: torch.Tensor, target: torch.Tensor, teacher_pred: torch.Tensor,
                 fused: torch.Tensor, teacher_fused: torch.Tensor, *, kd_weight: float = 0.1,
                 feat_weight: float = 0.1, band_weight: float = 0.1, sam_weight: float = 0.1
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Student objective (distillation from the detached teacher); returns (total, terms)."""
    _weights(kd_weight=kd_weight, feat_weight=feat_weight, band_weight=band_weight, sam_weight=sam_weight)
    _pair(pred, teacher_pred, "pred", "teacher_pred")
    terms = {"l1": smooth_l1_loss(pred, target), "kd": kd_response_loss(pred, teacher_pred),
             "feat": feature_bce_loss(fused, teacher_fused), "band": band_wise_loss(pred, target),
             "sam": sam_loss(pred, target)}
    total = (terms["l1"] + kd_weight * terms["kd"] + feat_weight * terms["feat"]
             + band_weight * terms["band"] + sam_weight * terms["sam"])
    return total, {**{k: v.detach() for k, v in terms.items()}, "total": total.detach()}
