"""The ``csakd-fast`` command (also ``python -m csakd_fast``).

    csakd-fast train    [--config demo|paper|FILE.toml] [--out DIR] [--resume] [flags] [--set k=v ...]
    csakd-fast evaluate CHECKPOINT [CHECKPOINT ...] [--data reference | FILE ...] [--json OUT]
    csakd-fast fuse     CHECKPOINT --lr-hsi FILE --hr-msi FILE [--out FILE]
    csakd-fast report   RUN_DIR
    csakd-fast info

Errors in the arguments or the data end the command with a one-line message and exit status 2.

This module imports only the standard library at the top: numpy, torch and the package's
modules are imported inside the subcommands, so that ``csakd-fast --help`` (and an argument
error) answers at once.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _wavelengths(text):
    """``--wavelengths``: 'cave', a comma list of nm, or a text/.npy file of them."""
    if text is None or text == "cave":
        return text
    import numpy as np

    p = Path(text)
    if p.is_file():
        return np.load(p) if p.suffix == ".npy" else np.loadtxt(p, delimiter=None, ndmin=1)
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--wavelengths: expected 'cave', comma-separated numbers (nm) or a file, got {text!r}")


# names the choices of csakd_fast.backends (CHOICES, OPS) without importing it (it imports torch);
# tests/test_cli.py checks that they agree
BACKEND_HELP = ("the backend of every fused op: auto, reference, torch, triton, cpp or cuda; or one per "
                "op as OP=NAME pairs (ops csa, clra; those left out: auto), e.g. csa=cpp,clra=torch")


def _backend(spec: str) -> dict:
    """``--backend``: {op: name} (ValueError naming the flag for a bad spec)."""
    from . import backends

    return backends.per_op(spec, name="--backend")


def _train(args) -> None:
    from .training.config import load_config, parse_value
    from .training.trainer import train

    if args.backend is not None:   # checked here so that a bad spec names the flag; the text
        _backend(args.backend)     # goes on to TrainConfig.backend, which stores it
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    for flag in ("mode", "epochs", "batch_size", "lr", "device", "backend", "teacher_checkpoint",
                 "max_iters", "seed", "threads", "data", "val_data", "test_data", "crop_size"):
        v = getattr(args, flag)
        if v is not None:
            overrides[flag] = v
    if args.resume:
        if args.config is not None:
            raise ValueError("--config: a resumed run uses its stored settings (flags may change "
                             "only the run-control ones)")
        result = train(None, args.out, resume=True, overrides=overrides)
    else:
        result = train(load_config(args.config, overrides), args.out)
    _print_results(result.metrics)
    if not args.no_report:
        from .training.report import write_report

        path = write_report(result.out, result.dataset, result.models, result.metrics, result.device)
        print(f"report: {path}")


def _print_results(res: dict) -> None:
    """The metric table of a run's final evaluation (its test.json)."""
    from .training.evaluate import format_table

    which = "; ".join(f"{r}: {w}" for r, w in res["weights"].items())
    print(format_table(res["mean"], f"{res['split']} metrics, {len(res['images'])} image(s) ({which})"))


def _evaluate(args) -> None:
    import numpy as np

    from ._io import atomic_write_text
    from .data import FusionDataset, load_reference_scenes
    from .models import load_checkpoint
    from .training.evaluate import evaluate, format_table, with_baseline
    from .training.trainer import resolve_device

    backend = _backend(args.backend)
    device = resolve_device(args.device)
    models = {}
    for path in args.checkpoints:
        name = Path(path).stem
        if name in models or name == "bicubic":
            name = f"{name}#{len(models)}"
        models[name] = load_checkpoint(path, backend=backend).to(device)
    cfg0 = next(iter(models.values())).config
    for name, m in models.items():
        if (m.config.bands, m.config.msi_bands, m.config.scale) != (cfg0.bands, cfg0.msi_bands, cfg0.scale):
            raise ValueError(f"checkpoints: {name} takes {m.config.bands} bands, {m.config.msi_bands} MSI "
                             f"bands, scale {m.config.scale}; the first takes {cfg0.bands}, "
                             f"{cfg0.msi_bands}, scale {cfg0.scale}")
    if args.data == ["reference"]:
        sources = load_reference_scenes(args.split)
    else:
        sources = args.data
    srf = args.srf
    if Path(srf).suffix == ".npy":
        srf = np.load(srf)
    ds = FusionDataset(sources, srf, mode="eval", scale=cfg0.scale, wavelengths=_wavelengths(args.wavelengths),
                       tile=args.tile, reader_kwargs={"key": args.key} if args.key else None)
    if (ds.bands, ds.msi_bands) != (cfg0.bands, cfg0.msi_bands):
        raise ValueError(f"--data: the checkpoints take {cfg0.bands} bands and {cfg0.msi_bands} MSI bands; "
                         f"the data (with srf {args.srf!r}) has {ds.bands} and {ds.msi_bands}")
    res = evaluate(with_baseline(models, cfg0.scale), ds, device, models=list(models.values()))
    print(format_table(res["mean"], f"{len(res['images'])} image(s)"))
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
        print(f"metrics: {args.json}")


def _fuse(args) -> None:
    from .inference import fuse_files

    path = fuse_files(args.checkpoint, args.lr_hsi, args.hr_msi, args.out, device=args.device,
                      backend=_backend(args.backend), key=args.key, band_axis=args.band_axis)
    print(f"fused: {path}")


def _report(args) -> None:
    from .models import load_checkpoint
    from .training.config import TrainConfig
    from .training.report import write_report
    from .training.trainer import build_datasets, resolve_device

    run = Path(args.run_dir)
    if not (run / "config.json").is_file() or not (run / "test.json").is_file():
        raise ValueError(f"run_dir: {run} is not a finished training run (config.json and test.json expected)")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()), f"{run}/config.json")
    results = json.loads((run / "test.json").read_text())
    data = build_datasets(cfg)
    dataset = data.test if data.test is not None else data.val
    device = resolve_device(args.device)
    models = {}
    for role in ("teacher", "student"):
        for kind in ("best", "last"):
            p = run / f"{role}_{kind}.pth"
            if p.is_file():
                models[role] = load_checkpoint(p, backend=cfg.backend).to(device)
                break
    if cfg.mode == "distill" and "teacher" not in models:
        models["teacher"] = load_checkpoint(cfg.teacher_checkpoint, backend=cfg.backend).to(device)
    print(f"report: {write_report(run, dataset, models, results, device)}")


def _info(args) -> None:
    """Per fused op and device: the usable backends, auto's pick, and why each other one is not
    usable (``backends.explain``)."""
    import torch

    from . import __version__, backends

    print(f"csakd_fast {__version__}, torch {torch.__version__}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for op in backends.OPS:
        for dev in devices:
            why_not = backends.explain(op, dev)
            usable = [b for b, why in why_not.items() if why is None]
            try:
                auto = backends.resolve(op, "auto", torch.device(dev))
            except ValueError as e:
                auto = f"none, {e}"
            print(f"  {op} on {dev}: {', '.join(usable) or 'no backend'} (auto: {auto})")
            for b, why in why_not.items():
                if why is not None:
                    print(f"    {b}: not usable: {why}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csakd-fast", description="CSAKD hyperspectral/multispectral "
                                "fusion: train teacher and student, evaluate, fuse.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a teacher, co-train teacher and student, or distil a student")
    t.add_argument("--config", default=None, help="a preset (paper, demo) or a TOML file; default: paper")
    t.add_argument("--out", default="runs/csakd", help="run folder (default runs/csakd)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    t.add_argument("--mode", choices=("teacher", "cotrain", "distill"))
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--crop-size", type=int, dest="crop_size")
    t.add_argument("--lr", type=float)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"))
    t.add_argument("--backend", metavar="NAME|OP=NAME,...", help=BACKEND_HELP + " (default: the config's, auto)")
    t.add_argument("--teacher-checkpoint", dest="teacher_checkpoint")
    t.add_argument("--data", nargs="+", help="'reference' or HR-HSI cube files")
    t.add_argument("--val-data", nargs="+", dest="val_data")
    t.add_argument("--test-data", nargs="+", dest="test_data")
    t.add_argument("--max-iters", type=int, dest="max_iters", help="stop after this many iterations")
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--no-report", action="store_true", help="skip the figures at the end")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any TrainConfig field, value in TOML syntax (e.g. --set 'teacher={nf=32}')")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="metrics of checkpoints (and the bicubic baseline) on a dataset")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--data", nargs="+", default=["reference"], help="'reference' or HR-HSI cube files")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="reference split")
    e.add_argument("--srf", default="sentinel2", help="sensor name or an (M, L) .npy matrix")
    e.add_argument("--wavelengths", help="'cave', comma list (nm) or file, for cubes without them")
    e.add_argument("--key", help="variable name in .mat/.npz files")
    e.add_argument("--tile", type=int, help="evaluate tiles of this size instead of whole images")
    e.add_argument("--json", help="write the metrics (per image and mean) to this JSON file")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--backend", default="auto", metavar="NAME|OP=NAME,...", help=BACKEND_HELP + " (default auto)")
    e.set_defaults(func=_evaluate)

    f = sub.add_parser("fuse", help="fuse an LR-HSI and an HR-MSI file into an HR-HSI file")
    f.add_argument("checkpoint")
    f.add_argument("--lr-hsi", required=True, dest="lr_hsi")
    f.add_argument("--hr-msi", required=True, dest="hr_msi")
    f.add_argument("--out", help="output file (default: <lr-hsi stem>_fused in the LR-HSI's format)")
    f.add_argument("--key", help="variable name in .mat/.npz inputs")
    f.add_argument("--band-axis", type=int, dest="band_axis", help="band axis of .mat/.npy/.npz/TIFF inputs")
    f.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    f.add_argument("--backend", default="auto", metavar="NAME|OP=NAME,...", help=BACKEND_HELP + " (default auto)")
    f.set_defaults(func=_fuse)

    r = sub.add_parser("report", help="(re)write the figures and report.md of a finished run")
    r.add_argument("run_dir")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.set_defaults(func=_report)

    i = sub.add_parser("info", help="version and the backends available on this machine")
    i.set_defaults(func=_info)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:
        print(f"csakd-fast {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
