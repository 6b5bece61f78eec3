"""Training, evaluation and reports: the ``csakd-fast`` command's engine.

``config`` (TrainConfig, presets, TOML files), ``trainer`` (teacher / co-training / distillation
loop, checkpoints, exact resume), ``log`` (the run's log.jsonl and TensorBoard scalars),
``evaluate`` (all metrics against the bicubic baseline), ``report`` (figures and a markdown
summary)."""
from .config import TrainConfig, load_config
from .evaluate import bicubic, evaluate, format_table
from .trainer import Trainer, TrainResult, build_datasets, train

__all__ = ["TrainConfig", "load_config", "Trainer", "TrainResult", "build_datasets", "train", "evaluate",
           "bicubic", "format_table"]
