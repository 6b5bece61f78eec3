"""Evaluation: every metric of the paper for any set of predictors on a FusionDataset.

A predictor maps (lr_hsi (B, L, h, w), hr_msi (B, M, s·h, s·w)) in [−1, 1] to an HR-HSI estimate
(B, L, s·h, s·w) in [−1, 1]: a CSAKDNet (its first output) or the bicubic baseline, the LR-HSI
upsampled by bicubic interpolation (``align_corners=False``, the reference every fusion method
must beat).

Metrics (``csakd_fast.metrics``), per image: PSNR, SAM, ERGAS (with the scale), SSIM and CC on
the [0, 1] scale, the prediction clipped to [0, 1] first (an image on that scale cannot leave it;
a network output that does is counted at the border, as an 8-bit or reflectance product would
store it); RMSE on the cube's original scale (``denormalize`` with the cube's vmin, vmax). The
summary is the mean over images.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping

import torch
import torch.nn.functional as F

from .. import metrics
from ..data.normalization import denormalize, to_unit

METRICS = ("psnr", "sam", "ergas", "ssim", "cc", "rmse")
# what "better" means per metric, for tables and best-checkpoint choices
HIGHER_IS_BETTER = {"psnr": True, "sam": False, "ergas": False, "ssim": True, "cc": True, "rmse": False}
UNITS = {"psnr": "dB", "sam": "°", "ergas": "", "ssim": "", "cc": "", "rmse": ""}

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bicubic(scale: int) -> Predictor:
    """The bicubic baseline: the LR-HSI upsampled ×``scale`` (the HR-MSI is not used)."""
    def predict(lr_hsi, hr_msi):
        return F.interpolate(lr_hsi, scale_factor=scale, mode="bicubic", align_corners=False)
    return predict


def as_predictor(model) -> Predictor:
    """A CSAKDNet (or any module returning (hr_hsi, fused) or hr_hsi) as a predictor."""
    def predict(lr_hsi, hr_msi):
        out = model(lr_hsi, hr_msi)
        return out[0] if isinstance(out, (tuple, list)) else out
    return predict


def with_baseline(models: Mapping[str, torch.nn.Module], scale: int) -> Dict[str, Predictor]:
    """{"bicubic": the baseline, name: model as a predictor, …}: what every table compares."""
    return {"bicubic": bicubic(scale), **{name: as_predictor(m) for name, m in models.items()}}


def image_metrics(pred: torch.Tensor, target: torch.Tensor, vmin, vmax, scale: int) -> Dict[str, torch.Tensor]:
    """All metrics of a batch in [−1, 1] (B, L, H, W) -> {metric: (B,) float64}."""
    pred = pred.clamp(-1, 1)
    p = to_unit(pred)
    t = to_unit(target)
    out = {"psnr": metrics.psnr(p, t), "sam": metrics.sam(p, t), "ergas": metrics.ergas(p, t, scale=scale),
           "cc": metrics.cc(p, t)}
    out["ssim"] = metrics.ssim(p, t) if min(t.shape[-2:]) >= 11 else torch.full_like(out["psnr"], math.nan)
    out["rmse"] = metrics.rmse(denormalize(pred.double(), vmin, vmax),
                               denormalize(target.double(), vmin, vmax))
    return out


@torch.no_grad()
def predict_all(predictors: Mapping[str, Predictor], batch: dict, device) -> Dict[str, torch.Tensor]:
    lr = batch["lr_hsi"].to(device)
    msi = batch["hr_msi"].to(device)
    return {name: fn(lr, msi) for name, fn in predictors.items()}


def evaluate(predictors: Mapping[str, Predictor], dataset, device="cpu", models=()) -> dict:
    """Metrics of every predictor on every item of an eval-mode ``dataset``.

    ``models``: modules to put in eval mode for the duration (restored afterwards).
    Returns ``{"mean": {name: {metric: float}}, "images": [{"name": str, name: {metric: float}}]}``.
    """
    if getattr(dataset, "mode", "eval") != "eval":
        raise ValueError("dataset: expected an evaluation dataset (mode='eval')")
    device = torch.device(device)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    images = []
    try:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
        for batch in loader:
            target = batch["hr_hsi"].to(device)
            preds = predict_all(predictors, batch, device)
            row = {"name": batch["name"][0]}
            for name, pred in preds.items():
                m = image_metrics(pred.float(), target, batch["vmin"], batch["vmax"], dataset.scale)
                row[name] = {k: float(v[0]) for k, v in m.items()}
            images.append(row)
    finally:
        for m, t in zip(models, was_training):
            m.train(t)
    mean = {name: {k: _nanmean([img[name][k] for img in images]) for k in METRICS} for name in predictors}
    return {"mean": mean, "images": images}


def _nanmean(values):
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def format_table(mean: Mapping[str, Mapping[str, float]], title: str | None = None) -> str:
    """A markdown table: one row per predictor, one column per metric."""
    head = "| | " + " | ".join(f"{k.upper()}{' (' + UNITS[k] + ')' if UNITS[k] else ''} {'↑' if HIGHER_IS_BETTER[k] else '↓'}"
                                  for k in METRICS) + " |"
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + " --- |" * (len(METRICS) + 1)]
    fmt = {"psnr": "{:.2f}", "sam": "{:.3f}", "ergas": "{:.3f}", "ssim": "{:.4f}", "cc": "{:.4f}", "rmse": "{:.5f}"}
    for name, row in mean.items():
        lines.append(f"| {name} | " + " | ".join(fmt[k].format(row[k]) for k in METRICS) + " |")
    return "\n".join(lines)
