"""The run report: figures a person would rather look at than read, and a short markdown summary.

``write_report(run_dir, dataset, models, results)`` writes into ``<run_dir>/report/``:

- ``composites.png``: false-colour composites (bands nearest 650/550/470 nm, or three spread
  bands without wavelengths) of the HR-MSI, the LR-HSI, the ground truth, the bicubic baseline,
  the teacher and the student, all with the ground truth's 2–98 % stretch;
- ``errors.png``: per-pixel spectral angle (degrees) and per-pixel RMSE ([0, 1] scale) of every
  method, one shared colour bar per row;
- ``spectra.png``: spectra at four pixels (the bicubic baseline's worst pixel and three fixed
  positions), ground truth against every method;
- ``curves.png``: training losses and validation PSNR / SAM per epoch, from ``log.jsonl``;
- ``report.md``: the metric table, model sizes, training time, and the figures.

The figures show the first image of ``dataset`` (the test scene of the reference data).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _io, metrics
from ..data.normalization import to_unit
from .evaluate import format_table, predict_all, with_baseline
from .log import read_log

ORDER = ("bicubic", "teacher", "student")
COLOURS = {"bicubic": "tab:gray", "teacher": "tab:blue", "student": "tab:orange"}


def _rgb_bands(wavelengths, L: int) -> list:
    if wavelengths is None:
        return [int(L * 0.75), L // 2, L // 4]
    wl = np.asarray(wavelengths)
    return [int(np.argmin(np.abs(wl - t))) for t in (650.0, 550.0, 470.0)]


def _msi_rgb(srf, wavelengths, M: int) -> list:
    """MSI bands for R, G, B: those whose SRF centroid is nearest 650/550/470 nm."""
    if srf is None or wavelengths is None or M < 3:
        return [min(i, M - 1) for i in (2, 1, 0)]
    centroid = np.asarray(srf) @ np.asarray(wavelengths) / np.asarray(srf).sum(1)
    return [int(np.argmin(np.abs(centroid - t))) for t in (650.0, 550.0, 470.0)]


def _stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip((img - lo) / np.maximum(hi - lo, 1e-12), 0, 1)


def _composite(cube: np.ndarray, bands: list, ref: np.ndarray | None = None):
    """(L, H, W) -> (H, W, 3) with the 2–98 % stretch of ``ref`` (default: itself)."""
    img = np.stack([cube[b] for b in bands], -1)
    r = img if ref is None else np.stack([ref[b] for b in bands], -1)
    lo, hi = np.percentile(r, 2, axis=(0, 1)), np.percentile(r, 98, axis=(0, 1))
    return _stretch(img, lo, hi)


def _segments(wl: np.ndarray):
    """Index ranges of contiguous wavelength runs (a spectrum is not drawn across a gap)."""
    step = np.median(np.diff(wl)) if len(wl) > 1 else 1.0
    cuts = np.where(np.diff(wl) > 2 * step)[0] + 1
    return np.split(np.arange(len(wl)), cuts)


def _save(fig, path: Path, **kw) -> None:
    import matplotlib.pyplot as plt

    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", **kw)
    plt.close(fig)


@dataclass
class _Sample:
    """The first image of the dataset and every method's estimate of it, on the [0, 1] scale,
    channel-first (L, H, W) float64 arrays."""

    target: np.ndarray
    lr: np.ndarray
    msi: np.ndarray
    pred: dict                  # method name -> estimate; methods in ORDER
    names: list                 # the methods present, in ORDER
    wavelengths: object         # (L,) band centres or None
    bands: list                 # the R, G, B bands of the false-colour composites
    name: str                   # the image's name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sample(dataset, models: dict, device) -> _Sample:
    preds_fn = with_baseline({r: m for r, m in models.items() if r in ("teacher", "student")}, dataset.scale)
    item = dataset[0]
    batch = {k: (v[None] if torch.is_tensor(v) else v) for k, v in item.items()}
    for m in models.values():
        m.eval()
    preds = predict_all(preds_fn, batch, device)
    unit = lambda t: to_unit(t.clamp(-1, 1))[0].double().cpu().numpy()  # noqa: E731
    target = unit(batch["hr_hsi"])
    pred = {k: unit(v) for k, v in preds.items()}
    info = dataset.cube_info(0)
    wl = info["wavelengths"]
    return _Sample(target=target, lr=unit(batch["lr_hsi"]), msi=unit(batch["hr_msi"]), pred=pred,
                   names=[n for n in ORDER if n in pred], wavelengths=wl,
                   bands=_rgb_bands(wl, target.shape[0]), name=info["name"])


def _plot_composites(s: _Sample, dataset, results: dict, path: Path) -> None:
    """False-colour composites of the inputs, the ground truth and every method."""
    plt = _pyplot()
    wl, bands, target = s.wavelengths, s.bands, s.target
    panels = [("HR-MSI", _composite(s.msi, _msi_rgb(dataset.srf, wl, s.msi.shape[0]))),
              (f"LR-HSI (×{dataset.scale} coarser)", _composite(s.lr, bands, target)),
              ("ground truth", _composite(target, bands, target))]
    panels += [(n, _composite(s.pred[n], bands, target)) for n in s.names]
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img, interpolation="nearest")
        m = results["images"][0].get(title) if title in s.names else None
        ax.set_title(title + (f"\n{m['psnr']:.2f} dB, SAM {m['sam']:.2f}°" if m else ""), fontsize=10)
    band_txt = ", ".join(f"{wl[b]:.0f}" for b in bands) + " nm" if wl is not None else f"bands {bands}"
    fig.suptitle(f"{s.name}: false colour (R, G, B = {band_txt})", fontsize=11)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def _error_maps(s: _Sample):
    """Per-pixel spectral angle (degrees) and RMSE ([0, 1] scale) of every method."""
    target = torch.from_numpy(s.target)[None]
    sam_maps = {n: metrics.sam_map(torch.from_numpy(s.pred[n])[None], target)[0].numpy() for n in s.names}
    err_maps = {n: np.sqrt(((s.pred[n] - s.target) ** 2).mean(0)) for n in s.names}
    return sam_maps, err_maps


def _plot_errors(s: _Sample, sam_maps: dict, err_maps: dict, path: Path) -> None:
    """The error maps, one row per kind with a shared colour bar."""
    plt = _pyplot()
    names = s.names
    fig, axes = plt.subplots(2, len(names), figsize=(3.8 * len(names), 7), squeeze=False)
    for row, (maps, label) in enumerate(((sam_maps, "spectral angle (°)"), (err_maps, "RMSE ([0, 1] scale)"))):
        vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99.5))
        for col, n in enumerate(names):
            ax = axes[row, col]
            im = ax.imshow(maps[n], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{n}: mean {maps[n].mean():.3f}", fontsize=10)
            ax.axis("off")
        fig.colorbar(im, ax=list(axes[row]), shrink=0.85, label=label)
    _save(fig, path, dpi=110, bbox_inches="tight")


def _plot_spectra(s: _Sample, sam_maps: dict, path: Path) -> None:
    """Spectra at the bicubic baseline's worst pixel and three fixed ones."""
    plt = _pyplot()
    target, wl = s.target, s.wavelengths
    L, H, W = target.shape
    worst = np.unravel_index(int(np.argmax(sam_maps["bicubic"])), (H, W))
    pixels = [tuple(int(v) for v in worst), (H // 4, W // 4), (H // 2, 3 * W // 4), (3 * H // 4, W // 2)]
    x = np.asarray(wl) if wl is not None else np.arange(L)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (py, px) in zip(axes.flat, pixels):
        for seg_i, seg in enumerate(_segments(x)):
            ax.plot(x[seg], target[seg, py, px], color="black", lw=2, label="ground truth" if seg_i == 0 else None)
            for n in s.names:
                ax.plot(x[seg], s.pred[n][seg, py, px], color=COLOURS[n], lw=1.2,
                        ls="--" if n == "bicubic" else "-", label=n if seg_i == 0 else None)
        tag = " (bicubic's worst pixel)" if (py, px) == pixels[0] else ""
        ax.set_title(f"pixel (row {py}, col {px}){tag}", fontsize=10)
        ax.set_ylabel("[0, 1]-scaled value")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("wavelength (nm)" if wl is not None else "band")
    axes[0, 0].legend(fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def _plot_curves(log: list, path: Path) -> None:
    """Training losses and validation PSNR / SAM per epoch (``log``: :func:`read_log`)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ep = [r["epoch"] + 1 for r in log]
    # the reconstruction term, comparable between the two (the student's total is dominated
    # by the distillation BCE, which does not go to zero)
    for role in ("teacher", "student"):
        key = f"{role}/l1"
        if key in log[0]["train"]:
            axes[0].plot(ep, [r["train"][key] for r in log], color=COLOURS[role], label=role)
    axes[0].set_yscale("log")
    axes[0].set_title("training SmoothL1 to the target (mean per epoch)")
    val = [r for r in log if "val" in r]
    for i, metric in enumerate(("psnr", "sam"), start=1):
        for n in ORDER:
            pts = [(r["epoch"] + 1, r["val"][n][metric]) for r in val if n in r["val"]]
            if pts:
                axes[i].plot(*zip(*pts), color=COLOURS[n], marker="." if len(pts) < 40 else None,
                             ls="--" if n == "bicubic" else "-", label=n)
        axes[i].set_title(f"validation {'PSNR (dB)' if metric == 'psnr' else 'SAM (°)'}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def _markdown(title: str, names: list, results: dict, have_curves: bool) -> str:
    """report.md: the metric table, gains over bicubic, sizes, training time, the figures."""
    mean = {n: results["mean"][n] for n in names}
    lines = [f"# csakd_fast run report: {title}", "",
             f"{results.get('split', 'evaluation')} data: {len(results['images'])} image(s) "
             f"({', '.join(r['name'] for r in results['images'][:6])}); weights: "
             + ("; ".join(f"{r} {w}" for r, w in results.get("weights", {}).items()) or "as given")
             + ".", "",
             format_table(mean), ""]
    if "teacher" in mean and "bicubic" in mean:
        gains = [f"{n} {mean[n]['psnr'] - mean['bicubic']['psnr']:+.2f} dB" for n in names if n != "bicubic"]
        lines += ["PSNR against the bicubic baseline: " + ", ".join(gains) + "."]
        if "student" in mean:
            lines += [f"Student − teacher: {mean['student']['psnr'] - mean['teacher']['psnr']:+.2f} dB PSNR, "
                      f"{mean['student']['sam'] - mean['teacher']['sam']:+.3f}° SAM.", ""]
    params = results.get("parameters", {})
    if params:
        lines += ["Parameters: " + ", ".join(f"{r} {p / 1e6:.3f} M" for r, p in params.items()) + "."]
    if "iterations" in results:
        lines += [f"Training: {results['iterations']} iterations in {results['train_seconds']:.0f} s "
                  "(evaluation excluded).", ""]
    lines += ["![composites](composites.png)", "", "![errors](errors.png)", "", "![spectra](spectra.png)", ""]
    if have_curves:
        lines += ["![curves](curves.png)", ""]
    return "\n".join(lines) + "\n"


def write_report(run_dir, dataset, models: dict, results: dict, device="cpu") -> Path:
    """Figures and report.md for the models of a run (see the module doc); returns report.md.

    ``models``: {role: CSAKDNet} ("teacher", "student"; put in eval mode); ``results``: the
    run's final evaluation (test.json, ``TrainResult.metrics``) on ``dataset``."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    s = _sample(dataset, models, device)
    _plot_composites(s, dataset, results, out / "composites.png")
    sam_maps, err_maps = _error_maps(s)
    _plot_errors(s, sam_maps, err_maps, out / "errors.png")
    _plot_spectra(s, sam_maps, out / "spectra.png")
    log = read_log(run_dir)
    if log:
        _plot_curves(log, out / "curves.png")
    path = out / "report.md"
    _io.atomic_write_text(path, _markdown(run_dir.name, s.names, results, have_curves=bool(log)))
    _io.atomic_write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
    return path
