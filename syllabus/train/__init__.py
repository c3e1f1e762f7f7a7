"""The one loop core every trainable experiment goes through (see docs/engine.md)."""

from syllabus.train.config import TrainConfig
from syllabus.train.core import (
    FitResult,
    StepContext,
    Trainer,
    epoch_seed,
    fit,
    fit_summary,
    make_accelerator,
    native_bf16,
    resolve_precision,
    seed_everything,
)
from syllabus.train.state import load_best

__all__ = ["FitResult", "StepContext", "TrainConfig", "Trainer", "epoch_seed", "fit", "fit_summary",
           "load_best", "make_accelerator", "native_bf16",
           "resolve_precision", "seed_everything"]
