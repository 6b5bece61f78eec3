"""The run log: ``log.jsonl`` (one JSON line per epoch) and TensorBoard scalars.

:class:`RunLog` writes a run's log while it trains (:mod:`~csakd_fast.training.trainer`);
:func:`read_log` reads it back (the report's training curves, the tests). Neither needs the
trainer, so the trainer and the report both import this module and not each other.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional

LOG_NAME = "log.jsonl"


class RunLog:
    """log.jsonl (appended, one line per record) and TensorBoard (when installed and enabled)."""

    def __init__(self, out: Path, tensorboard: bool, purge_step: Optional[int]):
        out = Path(out)
        self.path = out / LOG_NAME
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an install requirement; a broken install only loses TB
                print("csakd-fast: tensorboard is not importable; scalars go to log.jsonl only")
            else:
                self.tb = SummaryWriter(str(out / "tb"), purge_step=purge_step)

    def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def record(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(out) -> list:
    """The records of a run's log.jsonl, cut at the last resume point (a resumed run rewrites
    the epochs after its checkpoint; the later line of an epoch wins)."""
    path = Path(out) / LOG_NAME
    if not path.is_file():
        return []
    by_epoch: Dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_epoch[rec["epoch"]] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]
