"""The training loop: teacher, co-training (the paper) and offline distillation.

A run writes into one folder (``out``)::

    config.json          the resolved TrainConfig
    state.pt             everything needed to continue (models, AdamW, schedulers, position,
                         best scores, torch RNG), rewritten atomically at every checkpoint
    teacher_best.pth     best checkpoint by validation SAM, per trained model, in the
    student_best.pth     csakd_fast checkpoint format (``csakd_fast.load_checkpoint``)
    teacher_last.pth …   the latest weights, same format
    log.jsonl            one JSON line per epoch (training losses, throughput, validation
                         metrics of the models and of the bicubic baseline)
    tb/                  TensorBoard scalars (losses per iteration, metrics per epoch)
    test.json            metrics of the best checkpoints on the test data
    report/              figures and report.md, written by ``csakd-fast train`` (or
                         ``report.write_report`` with what :func:`train` returns), not here

Iteration: one batch of random crops. Co-training: teacher forward, teacher loss, teacher step;
then student forward and the student loss against the teacher outputs of that same forward,
detached (docs/design.md, "The network"). Distillation: the frozen teacher's outputs under ``no_grad``.
Schedules advance per iteration: cosine from ``lr`` to ``min_lr`` over the whole run; step
×``step_gamma`` every ``step_epochs`` epochs; or constant.

Exact resumption: the data order of epoch e is a permutation drawn from (seed, e), every crop,
flip and noise draw of item i from (seed, e, i) (FusionDataset), and the models use no other
randomness; ``state.pt`` stores the position (epoch, batch) with the optimiser and scheduler
states, so ``resume`` continues bit-for-bit where the uninterrupted run would be (same device,
thread count and backend). The torch RNG state is stored as well, for randomness added later.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .. import _io, losses
from ..models import CSAKDNet, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate, with_baseline
from .log import RunLog

STATE_FORMAT = "csakd_fast-train"
STATE_VERSION = 1
# settings that may change when a run is resumed: they do not change what is computed
RESUMABLE = ("max_iters", "eval_every", "checkpoint_every", "progress", "tensorboard",
             "threads", "workers", "device")


@dataclass
class Datasets:
    train: object
    val: object
    test: Optional[object]


@dataclass
class TrainResult:
    """What :func:`train` returns: the outcome of a run and what it takes to show it (the
    ``csakd-fast train`` command prints ``metrics`` as a table and passes the rest to
    :func:`csakd_fast.training.report.write_report`).

    Attributes:
        metrics: the final evaluation, as written to ``test.json``: ``{"mean": {name: {metric:
            float}}, "images": [{"name": str, name: {…}}], "split": "test" | "val", "parameters":
            {role: int}, "iterations": int, "train_seconds": float, "weights": {role: str}}``,
            names being ``bicubic`` and the roles.
        models: the evaluated models by role ("teacher", "student"), on ``device``: the best
            checkpoints by validation SAM (the last weights where no validation ran yet), and in
            ``distill`` mode the frozen teacher.
        dataset: the evaluation FusionDataset those metrics come from (the test data, else the
            validation data).
        out: the run folder.
        device: the device the run trained and evaluated on.
        config: the run's settings (for a resumed run, the stored ones with the overrides).
    """

    metrics: dict
    models: Dict[str, CSAKDNet]
    dataset: object
    out: Path
    device: torch.device
    config: TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def build_datasets(cfg: TrainConfig) -> Datasets:
    """Training, validation and (optional) test FusionDatasets of a run."""
    from ..data import FusionDataset, load_reference_scenes

    srf = np.asarray(cfg.srf, dtype=np.float64) if isinstance(cfg.srf, list) else cfg.srf
    common = dict(wavelengths=cfg.wavelengths, scale=cfg.scale, seed=cfg.seed)
    if cfg.data == "reference":
        train_src = load_reference_scenes("train")
        val_src = cfg.val_data or load_reference_scenes("val")
        test_src = cfg.test_data or load_reference_scenes("test")
    else:
        train_src, val_src, test_src = cfg.data, cfg.val_data, cfg.test_data
    train = FusionDataset(train_src, srf, mode="train", crop_size=cfg.crop_size,
                          crops_per_epoch=cfg.crops_per_epoch, snr_lr=cfg.snr_lr,
                          snr_msi=cfg.snr_msi, **common)
    evals = [FusionDataset(src, srf, mode="eval", tile=cfg.eval_tile, **common) if src else None
             for src in (val_src, test_src)]
    for name, ds in zip(("val_data", "test_data"), evals):
        if ds is not None and (ds.bands, ds.msi_bands) != (train.bands, train.msi_bands):
            raise ValueError(f"{name}: expected {train.bands} bands and {train.msi_bands} MSI bands "
                             f"like the training data, got {ds.bands} and {ds.msi_bands}")
    return Datasets(train, *evals)


def _seed_int(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list:
    """The batches of item indices of ``epoch``: a permutation drawn from (seed, epoch), cut into
    full batches (one short batch when the epoch holds fewer items than a batch)."""
    g = torch.Generator().manual_seed(_seed_int(seed, 2, epoch))
    order = torch.randperm(n, generator=g).tolist()
    if n < batch_size:
        return [order]
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _schedule(optimizer, kind: str, cfg: TrainConfig, total_iters: int, iters_per_epoch: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_iters),
                                                          eta_min=cfg.min_lr)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_epochs * iters_per_epoch,
                                               gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def read_state(out) -> dict:
    """The training state of the run in ``out`` (its state.pt)."""
    path = Path(out) / "state.pt"
    if not path.is_file():
        raise ValueError(f"resume: no state.pt in {out} to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"resume: {path} is not readable ({e})") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"resume: {path} is not a csakd_fast training state")
    return state


def resumed_config(state: dict, overrides: dict) -> TrainConfig:
    """The stored settings of a run with ``overrides`` applied; only ``RESUMABLE`` settings may
    differ from the stored ones (the others would change what the resumed run computes)."""
    stored = TrainConfig.from_dict(state["config"], "state.pt config")
    cfg = stored.replace(**overrides)
    now, before = cfg.to_dict(), stored.to_dict()
    fixed = sorted(k for k in now if now[k] != before[k] and k not in RESUMABLE)
    if fixed:
        raise ValueError(f"resume: {fixed} differ from the stored run's settings; only "
                         f"{', '.join(RESUMABLE)} may change when resuming")
    return cfg


class Trainer:
    """One training run in ``out``; :meth:`run` trains (from the start, or from ``state.pt``
    with ``resume``) and returns the test metrics (or the last validation metrics)."""

    def __init__(self, cfg: TrainConfig | None, out, *, resume: bool = False, overrides: dict | None = None,
                 datasets: Datasets | None = None):
        self.out = Path(out)
        state = None
        if resume:
            if cfg is not None:
                raise ValueError("config: a resumed run uses its stored settings; pass only overrides")
            state = read_state(self.out)
            cfg = resumed_config(state, overrides or {})
        elif cfg is None:
            raise ValueError("config: expected a TrainConfig for a new run")
        elif (self.out / "state.pt").exists():
            raise ValueError(f"out: {self.out} already holds a run (state.pt); pass resume to continue "
                             "it or choose another folder")
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.data = datasets or build_datasets(cfg)
        L, M = self.data.train.bands, self.data.train.msi_bands
        self.models: Dict[str, CSAKDNet] = {}
        self.trained = {"teacher": ("teacher",), "cotrain": ("teacher", "student"),
                        "distill": ("student",)}[cfg.mode]
        if cfg.mode == "distill":
            teacher = load_checkpoint(cfg.teacher_checkpoint, backend=cfg.backend)
            if (teacher.config.bands, teacher.config.msi_bands, teacher.config.scale) != (L, M, cfg.scale):
                raise ValueError(f"teacher_checkpoint: the teacher takes {teacher.config.bands} bands, "
                                 f"{teacher.config.msi_bands} MSI bands, scale {teacher.config.scale}; "
                                 f"the data has {L}, {M}, scale {cfg.scale}")
            self.models["teacher"] = teacher.to(self.device).eval().requires_grad_(False)
        torch.manual_seed(cfg.seed)
        for role in self.trained:
            self.models[role] = CSAKDNet(cfg.model_config(role, L, M), backend=cfg.backend).to(self.device)
        self.iters_per_epoch = len(epoch_batches(len(self.data.train), cfg.batch_size, cfg.seed, 0))
        total = cfg.epochs * self.iters_per_epoch
        self.opt, self.sched = {}, {}
        for role in self.trained:
            lr = cfg.lr if role == "teacher" else (cfg.student_lr or cfg.lr)
            self.opt[role] = torch.optim.AdamW(self.models[role].parameters(), lr=lr,
                                               weight_decay=cfg.weight_decay)
            self.sched[role] = _schedule(self.opt[role], getattr(cfg, f"{role}_schedule"), cfg, total,
                                         self.iters_per_epoch)
        self.epoch, self.batch, self.iter, self.elapsed = 0, 0, 0, 0.0
        self._clock = time.perf_counter()
        self.best = {role: math.inf for role in self.trained}
        if state is not None:
            self._load_state(state)

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": self.cfg.to_dict(),
                "epoch": self.epoch, "batch": self.batch, "iter": self.iter, "elapsed": self.elapsed,
                "best": dict(self.best),
                "models": {r: self.models[r].state_dict() for r in self.trained},
                "optimizers": {r: self.opt[r].state_dict() for r in self.trained},
                "schedulers": {r: self.sched[r].state_dict() for r in self.trained},
                "rng": rng}

    def _load_state(self, state: dict) -> None:
        for r in self.trained:
            self.models[r].load_state_dict(state["models"][r])
            self.opt[r].load_state_dict(state["optimizers"][r])
            self.sched[r].load_state_dict(state["schedulers"][r])
        self.epoch, self.batch, self.iter = state["epoch"], state["batch"], state["iter"]
        self.elapsed, self.best = state["elapsed"], dict(state["best"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save_state(self) -> None:
        self._tick()
        _io.atomic_torch_save(self.state_dict(), self.out / "state.pt")
        for r in self.trained:
            save_checkpoint(self.out / f"{r}_last.pth", self.models[r], epoch=self.epoch, iter=self.iter)

    # --- one iteration -------------------------------------------------------------------------
    def _step(self, role: str, loss: torch.Tensor) -> None:
        opt = self.opt[role]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.models[role].parameters(), self.cfg.grad_clip)
        opt.step()
        self.sched[role].step()

    def train_step(self, batch: dict) -> Dict[str, float]:
        """One iteration on a collated batch; returns the loss terms (floats)."""
        cfg, dev = self.cfg, self.device
        lr, msi, y = (batch[k].to(dev, non_blocking=True) for k in ("lr_hsi", "hr_msi", "hr_hsi"))
        out: Dict[str, float] = {}
        teacher = self.models["teacher"]
        if "teacher" in self.trained:
            t_pred, t_fused = teacher(lr, msi)
            loss, terms = losses.teacher_loss(t_pred, y, sam_weight=cfg.sam_weight, band_weight=cfg.band_weight)
            self._step("teacher", loss)
            out.update({f"teacher/{k}": float(v) for k, v in terms.items()})
            t_pred, t_fused = t_pred.detach(), t_fused.detach()
        else:
            with torch.no_grad():
                t_pred, t_fused = teacher(lr, msi)
        if "student" in self.trained:
            s_pred, s_fused = self.models["student"](lr, msi)
            loss, terms = losses.student_loss(s_pred, y, t_pred, s_fused, t_fused, kd_weight=cfg.kd_weight,
                                              feat_weight=cfg.feat_weight, band_weight=cfg.band_weight,
                                              sam_weight=cfg.sam_weight)
            self._step("student", loss)
            out.update({f"student/{k}": float(v) for k, v in terms.items()})
        return out

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, dataset) -> dict:
        return evaluate(with_baseline(self.models, self.cfg.scale), dataset, self.device, models=list(self.models.values()))

    def _validate(self, log: RunLog, record: dict) -> None:
        res = self.evaluate(self.data.val)["mean"]
        record["val"] = res
        for name, m in res.items():
            log.scalars(f"val_{name}", m, self.iter)
        for r in self.trained:
            sam = res[r]["sam"]
            if sam < self.best[r]:
                self.best[r] = sam
                save_checkpoint(self.out / f"{r}_best.pth", self.models[r], epoch=self.epoch,
                                iter=self.iter, val=res[r])

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        _io.atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        log = RunLog(self.out, cfg.tensorboard, purge_step=self.iter if self.iter else None)
        total = cfg.epochs * self.iters_per_epoch
        stop_at = min(total, cfg.max_iters) if cfg.max_iters else total
        bar = _progress(cfg.progress, total, self.iter)
        bs = cfg.batch_size
        try:
            while self.epoch < cfg.epochs and self.iter < stop_at:
                self.data.train.set_epoch(self.epoch)
                batches = epoch_batches(len(self.data.train), bs, cfg.seed, self.epoch)
                loader = torch.utils.data.DataLoader(self.data.train, batch_sampler=batches[self.batch:],
                                                     num_workers=cfg.workers)
                sums: Dict[str, float] = {}
                seen, t_epoch = 0, time.perf_counter()
                self._clock = t_epoch
                for batch in loader:
                    terms = self.train_step(batch)
                    self.batch += 1
                    self.iter += 1
                    seen += 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                    log.scalars("train", terms, self.iter)
                    if bar is not None:
                        rate = seen * bs / (time.perf_counter() - t_epoch)
                        bar.set_postfix({k.replace("/total", ""): f"{v:.4f}" for k, v in terms.items()
                                         if k.endswith("/total")} | {"crops/s": f"{rate:.1f}"},
                                        refresh=False)
                        bar.update(1)
                    if self.iter >= stop_at:
                        break
                    if cfg.checkpoint_every and self.iter % cfg.checkpoint_every == 0:
                        self.save_state()
                seconds = time.perf_counter() - t_epoch
                self._tick()
                if self.batch < len(batches):   # stopped by max_iters inside an epoch
                    break
                record = {"epoch": self.epoch, "iter": self.iter, "seconds": round(self.elapsed, 2),
                          "crops_per_s": round(seen * bs / max(seconds, 1e-9), 3),
                          "train": {k: v / max(seen, 1) for k, v in sums.items()},
                          "lr": {r: self.sched[r].get_last_lr()[0] for r in self.trained}}
                last = self.epoch + 1 == cfg.epochs or self.iter >= stop_at
                if (self.epoch + 1) % cfg.eval_every == 0 or last:
                    self._validate(log, record)
                    self._clock = time.perf_counter()   # evaluation is not training time
                self.epoch, self.batch = self.epoch + 1, 0
                log.record(record)
            self.save_state()
        finally:
            if bar is not None:
                bar.close()
            log.close()
        return self.final_evaluation()

    @property
    def eval_data(self):
        """The dataset of the final evaluation: the test data, else the validation data."""
        return self.data.test if self.data.test is not None else self.data.val

    def _tick(self) -> None:
        """Add the time since the last tick to ``elapsed`` (training time, without evaluation)."""
        now = time.perf_counter()
        self.elapsed += now - self._clock
        self._clock = now

    def final_evaluation(self) -> dict:
        """Metrics of the best checkpoints (the last weights where no validation ran yet) on the
        test data, written to test.json; on the validation data when there is no test data.
        The evaluated models are kept in ``final_models``."""
        dataset = self.eval_data
        models, weights = dict(self.models), {}
        for r in self.trained:
            best = self.out / f"{r}_best.pth"
            weights[r] = "best by validation SAM" if best.is_file() else "last (no validation yet)"
            if best.is_file():
                models[r] = load_checkpoint(best, backend=self.cfg.backend).to(self.device)
        res = evaluate(with_baseline(models, self.cfg.scale), dataset, self.device, models=list(models.values()))
        res["split"] = "test" if self.data.test is not None else "val"
        res["parameters"] = {r: m.num_parameters() for r, m in models.items()}
        res["iterations"], res["train_seconds"] = self.iter, round(self.elapsed, 1)
        res["weights"] = weights
        _io.atomic_write_text(self.out / "test.json", json.dumps(res, indent=2) + "\n")
        self.final_models = models
        return res


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    # a log file (make demo | tee) gets a line every 30 s rather than a carriage-return stream
    interactive = os.isatty(2)
    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0, desc="train")


def train(cfg: TrainConfig | None, out, *, resume: bool = False,
          overrides: dict | None = None) -> TrainResult:
    """Train per ``cfg`` into ``out`` (see the module doc) and evaluate the best checkpoints
    (``test.json``); returns a :class:`TrainResult`. It prints no table and writes no report:
    the ``csakd-fast train`` command does both from the result.
    ``resume``: continue the run in ``out`` (``cfg`` None; ``overrides`` of RESUMABLE settings)."""
    trainer = Trainer(cfg, out, resume=resume, overrides=overrides)
    metrics = trainer.run()
    return TrainResult(metrics=metrics, models=trainer.final_models, dataset=trainer.eval_data,
                       out=trainer.out, device=trainer.device, config=trainer.cfg)
