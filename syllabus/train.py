"""The one training loop for supervised experiments, on Hugging Face Accelerate.

The same code runs on the CPU, one GPU, or several (`accelerate launch -m syllabus ...`).
What differs between experiments is a `Task`: how one batch becomes a loss, how the
training steps of an epoch become metrics, and how a model is evaluated on a loader.

Each epoch: seed from (seed, epoch), train with a progress bar, evaluate, log one record
to metrics.jsonl, save `last.pt` (and `best.pt` when the monitored metric improves).
Resuming loads `last.pt` (model, optimizer, scheduler, epoch, early-stopping state,
RNG state) and continues with the next epoch, so an interrupted and resumed run ends
with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from syllabus.config import choice
from syllabus.errors import RunFailed, UsageError
from syllabus.runs import Run, is_main_process


@dataclass
class TrainConfig:
    """Optimisation settings shared by the supervised experiments."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = choice("sgd", ["sgd", "adam", "adamw"])
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = choice("cosine", ["constant", "cosine", "step", "exponential"])
    step_size: int = 10  # epochs between decays, for "step"
    gamma: float = 0.1  # decay factor per step ("step") or per epoch ("exponential")
    monitor: str = "val/accuracy"  # metric that picks best.pt and drives early stopping
    early_stop: int = 0  # patience in epochs without improvement; 0 = off
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    precision: str = choice("no", ["no", "fp16", "bf16"])
    max_steps: int = 0  # cap on steps per epoch (smoke profiles); 0 = whole epoch
    log_every: int = 20  # steps between per-step loss records


class Task(Protocol):
    """What `fit` needs to know about one kind of model."""

    def step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        """Loss of one batch and detached extras for `summarize`."""

    def summarize(self, extras: list[dict]) -> dict[str, float]:
        """Training metrics of one epoch from the extras of its steps."""

    def evaluate(self, model: nn.Module, loader: Iterable, accelerator: Any) -> dict[str, float]:
        """Metrics of `model` on `loader` (called under `torch.no_grad`, eval mode)."""


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


def fit_summary(result: FitResult, run: Run, model: nn.Module) -> dict:
    """What every trained run reports: best and last epoch, early stop, mean time per epoch, size.

    Times come from metrics.jsonl, so a resumed run counts the epochs before the interruption.
    """
    times = [r["time/epoch"] for r in run.read_metrics() if "time/epoch" in r]
    return {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "time_per_epoch": sum(times) / max(len(times), 1), "params": sum(p.numel() for p in model.parameters())}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(device: str, precision: str = "no"):
    """An Accelerator on the requested device ("auto", "cpu" or "cuda")."""
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    return Accelerator(cpu=device == "cpu", mixed_precision=precision)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """A per-epoch learning-rate schedule."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "step":
        return sched.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "exponential":
        return sched.ExponentialLR(opt, gamma=cfg.gamma)
    return sched.LambdaLR(opt, lambda _: 1.0)


def monitor_mode(key: str) -> str:
    """Loss-like metrics are minimised, everything else maximised."""
    return "min" if any(w in key for w in ("loss", "error", "fid", "distance")) else "max"


def _improved(value: float, best: float, mode: str) -> bool:
    return value < best if mode == "min" else value > best


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Progress:
    """Early-stopping and best-checkpoint bookkeeping, saved with each checkpoint."""

    epoch: int = 0  # last finished epoch
    best_value: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    task: Task,
    cfg: TrainConfig,
    run: Run,
    *,
    seed: int = 0,
    after_step: Callable[[nn.Module], None] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train `model`, evaluating on `val_loader` each epoch; resumes from `run`'s last.pt.

    Args:
        after_step: called with the model after every optimizer step (e.g. to clamp
            BIN's rho into [0, 1]).
        on_epoch_end: called with (epoch, record) after the epoch's checkpoint is saved.
    """
    acc = make_accelerator(run.device, cfg.precision)
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg)
    progress = _resume(run, model, opt, sched)
    model, opt, train_loader, val_loader = acc.prepare(model, opt, train_loader, val_loader)
    mode = monitor_mode(cfg.monitor)
    history, stopped = [], False
    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        seed_everything(seed * 100_003 + epoch)
        record = _train_epoch(model, train_loader, opt, task, cfg, acc, run, epoch, after_step)
        record["lr"] = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        with torch.no_grad():
            record.update({f"val/{k}": v for k, v in task.evaluate(model, val_loader, acc).items()})
        stopped = _end_epoch(record, progress, cfg, mode, acc.unwrap_model(model), opt, sched, run)
        history.append(record)
        acc.print(_epoch_line(record, cfg))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if stopped:
            acc.print(f"early stop: no {cfg.monitor} improvement in {cfg.early_stop} epochs")
            break
    acc.wait_for_everyone()
    return FitResult(progress.best_epoch, progress.best_value, progress.epoch, stopped, history)


def _resume(run: Run, model: nn.Module, opt, sched) -> _Progress:
    state = run.load_checkpoint("last")
    if state is None:
        return _Progress()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    progress = _Progress(**state["progress"])
    run.truncate_metrics(progress.epoch)
    if is_main_process():
        print(f"resuming {run.path} after epoch {progress.epoch}")
    return progress


def _train_epoch(model, loader, opt, task: Task, cfg: TrainConfig, acc, run: Run, epoch: int, after_step) -> dict:
    model.train()
    extras, start = [], time.perf_counter()
    total = min(len(loader), cfg.max_steps) if cfg.max_steps else len(loader)
    bar = tqdm(total=total, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
               disable=None if acc.is_main_process else True)
    for i, batch in enumerate(loader):
        if i >= total:
            break
        loss, extra = task.step(model, batch)
        if not torch.isfinite(loss.detach()):
            bar.close()
            raise RunFailed(
                f"loss became {loss.item()} at epoch {epoch} step {i + 1}; stopped. "
                f"The last good checkpoint is {run.checkpoint('last')} (lower train.lr?)"
            )
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if after_step is not None:
            after_step(acc.unwrap_model(model))
        extras.append(extra)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.log_every and (i + 1) % cfg.log_every == 0:
            run.log({"epoch": epoch, "step": (epoch - 1) * total + i + 1, "train/step_loss": loss.item()})
    bar.close()
    record = {"epoch": epoch, "time/epoch": time.perf_counter() - start}
    record.update({f"train/{k}": v for k, v in task.summarize(extras).items()})
    return record


def _end_epoch(record: dict, progress: _Progress, cfg: TrainConfig, mode: str, model, opt, sched, run: Run) -> bool:
    """Update best/early-stop state, log, and save checkpoints; True if training should stop."""
    if cfg.monitor not in record:
        raise UsageError(f"train.monitor {cfg.monitor!r} is not a logged metric; logged: {', '.join(record)}")
    value = float(record[cfg.monitor])
    progress.epoch = record["epoch"]
    if math.isnan(progress.best_value) or _improved(value, progress.best_value, mode):
        progress.best_value, progress.best_epoch, progress.bad_epochs = value, progress.epoch, 0
        run.save_checkpoint("best", {"model": model.state_dict(), "epoch": progress.epoch, cfg.monitor: value})
    else:
        progress.bad_epochs += 1
    run.log(record)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": _rng_state(),
        "progress": vars(progress).copy(),
    }
    run.save_checkpoint("last", state)
    return cfg.early_stop > 0 and progress.bad_epochs >= cfg.early_stop


def _epoch_line(record: dict, cfg: TrainConfig) -> str:
    shown = [k for k in record if k.endswith(("loss", "accuracy"))] + [cfg.monitor]
    parts = [f"{k} {record[k]:.4f}" for k in dict.fromkeys(shown) if k in record]
    return f"epoch {record['epoch']}/{cfg.epochs}  " + "  ".join(parts) + f"  ({record['time/epoch']:.1f}s)"
