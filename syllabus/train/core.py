"""The one training loop, on Hugging Face Accelerate; an experiment supplies a `Trainer`.

Each epoch: seed from (seed, epoch), run `train_step` over the epoch's batches with a progress
bar, evaluate (EMA weights swapped in when on), log one record to metrics.jsonl, and save
`last.pt` (and `best.pt` when `cfg.monitor` improves in `cfg.monitor_mode`). Resuming loads
`last.pt` and continues with the next epoch, so an interrupted and resumed run ends with the
same metrics as an uninterrupted one; a finished run stays finished.

The same code runs on the CPU, one GPU, or several processes (`accelerate launch -m syllabus`):
modules, optimizers and the training loader go through `accelerator.prepare`, only the main
process writes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from syllabus.errors import RunFailed, UsageError
from syllabus.runs import Run, is_main_process
from syllabus.train import state as ckpt
from syllabus.train.config import TrainConfig
from syllabus.train.optim import default_groups, lr_factor, make_optimizer, set_lr


class Trainer:
    """What one experiment trains: its modules, its step and its evaluation.

    `modules()` maps attribute names of the trainer to the modules it trains; after
    `accelerator.prepare` the loop sets the prepared modules back on those attributes.
    """

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def param_groups(self, cfg: TrainConfig) -> dict[str, list[dict]]:
        """Optimizer name -> torch param groups (a group may carry `lr` or `lr_scale`)."""
        return default_groups(self.modules())

    def make_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {name: make_optimizer(groups, cfg) for name, groups in self.param_groups(cfg).items()}

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """One training step; calls `ctx.update(name, loss)` once per optimizer it steps."""
        raise NotImplementedError

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Validation metrics (without the `val/` prefix); modules in eval mode, under no_grad."""
        return {}

    def summarize(self, records: list[dict]) -> dict[str, float]:
        """Train metrics of an epoch from its step records: the mean of each key."""
        keys = dict.fromkeys(k for r in records for k in r)
        return {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


@dataclass
class StepContext:
    """What a trainer's step and evaluation see of the loop."""

    cfg: TrainConfig
    accelerator: Any
    run: Run
    optimizers: dict[str, torch.optim.Optimizer]
    progress: ckpt.Progress
    total_steps: int
    epoch: int = 0
    ema: ckpt.WeightEMA | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def fraction(self) -> float:
        """Share of all training steps done, in [0, 1] (for annealed settings)."""
        return min(1.0, self.progress.step / max(self.total_steps, 1))

    def to_device(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.to(self.device)
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.to_device(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.to_device(v) for k, v in obj.items()}
        return obj

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` from every process (of a loader from `prepare_eval`); itself on one process."""
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.gather_for_metrics(tensor)

    def prepare_eval(self, loader: DataLoader) -> DataLoader:
        """`loader` sharded across processes (once); gather its results with `gather`."""
        if self.accelerator.num_processes == 1:
            return loader
        cache = self.__dict__.setdefault("_eval_loaders", {})
        if id(loader) not in cache:
            cache[id(loader)] = self.accelerator.prepare_data_loader(loader)
        return cache[id(loader)]

    def update(self, name: str, loss: torch.Tensor, *, grad_norm: bool = False) -> float | None:
        """Backward `loss` and step optimizer `name`; returns the gradient norm before clipping if asked."""
        self._guard(name, loss)
        opt = self.optimizers[name]
        set_lr(opt, lr_factor(self.cfg, self.progress.step + 1, self.epoch))
        opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        params = [p for g in opt.param_groups for p in g["params"]]
        norm = None
        if self.cfg.grad_clip > 0 or grad_norm:
            limit = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
            norm = float(self.accelerator.clip_grad_norm_(params, limit))
        opt.step()
        if self.ema is not None:
            self.ema.update({k: self.accelerator.unwrap_model(m) for k, m in self.modules.items()})
        return norm

    def _guard(self, name: str, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            self.fail(f"the {name!r} loss became {value}")
        first = self.progress.first_loss.setdefault(name, value)
        if self.cfg.explode and abs(value) > self.cfg.explode * max(abs(first), 1e-3):
            self.fail(f"the {name!r} loss exploded to {value:.4g} ({self.cfg.explode:g} x its first value {first:.4g})")

    def fail(self, what: str) -> None:
        last = self.run.checkpoint("last")
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        raise RunFailed(f"{what} at epoch {self.epoch}, step {self.progress.step + 1}; stopped, "
                        f"{kept} (lower train.lr?)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def native_bf16(device: str = "auto") -> bool:
    """Whether the device a run gets ("auto", "cpu" or "cuda") computes bfloat16 natively: a CUDA
    GPU that supports it, or a CPU with AMX or AVX512-BF16 (elsewhere bf16 is emulated, slower)."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def resolve_precision(precision: str, device: str = "auto") -> str:
    """`train.precision` with "auto" resolved: "bf16" where `native_bf16`, else "no"."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "no"


def make_accelerator(device: str, precision: str = "no"):
    """An Accelerator on the requested device ("auto", "cpu" or "cuda"). Accelerate keeps one
    state per process; it is reset first, so runs in one process (run-all, tests) may each take
    their own precision. The process group (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(cpu=device == "cpu", mixed_precision=resolve_precision(precision, device))


def fit(trainer: Trainer, train_data: Iterable, cfg: TrainConfig, run: Run, *, seed: int = 0) -> FitResult:
    """Train `trainer` on `train_data` for `cfg.epochs` epochs; resumes from `run`'s last.pt."""
    acc = make_accelerator(run.device, cfg.precision)
    modules = trainer.modules()
    optimizers = trainer.make_optimizers(cfg)
    progress = _resume(run, trainer, modules, optimizers, cfg)
    names, opt_names = list(modules), list(optimizers)
    prepared = acc.prepare(*modules.values(), *optimizers.values(),
                           *([train_data] if isinstance(train_data, DataLoader) else []))
    modules = dict(zip(names, prepared[:len(names)]))
    optimizers = dict(zip(opt_names, prepared[len(names):len(names) + len(opt_names)]))
    if isinstance(train_data, DataLoader):
        train_data = prepared[-1]
    for name, m in modules.items():
        setattr(trainer, name, m)
    steps = _steps_per_epoch(train_data, cfg)
    ema = _make_ema(modules, acc, cfg, run)
    ctx = StepContext(cfg, acc, run, optimizers, progress, steps * cfg.epochs, ema=ema, modules=modules)
    history, stopped = [], False
    while not progress.finished and progress.epoch < cfg.epochs:
        ctx.epoch = progress.epoch + 1
        seed_everything(epoch_seed(seed, ctx.epoch))
        record = _train_epoch(trainer, train_data, steps, ctx)
        record.update({f"val/{k}": v for k, v in _evaluate(trainer, ctx).items()})
        stopped = _end_epoch(record, ctx, trainer)
        history.append(record)
        acc.print(_epoch_line(record, cfg))
        if stopped:
            acc.print(f"early stop: no {cfg.monitor} improvement in {cfg.early_stop} epochs")
    acc.wait_for_everyone()
    stopped = cfg.early_stop > 0 and progress.bad_epochs >= cfg.early_stop
    return FitResult(progress.best_epoch, progress.best_value, progress.epoch, stopped, history)


def _make_ema(modules: dict[str, nn.Module], acc, cfg: TrainConfig, run: Run) -> ckpt.WeightEMA | None:
    """The weight EMA over the (unwrapped, placed) modules, its averages restored on resume."""
    if cfg.ema <= 0:
        return None
    ema = ckpt.WeightEMA({k: acc.unwrap_model(m) for k, m in modules.items()}, cfg.ema)
    if run.pending_ema is not None:
        ema.shadow = {name: {k: v.to(acc.device) for k, v in sd.items()} for name, sd in run.pending_ema.items()}
    return ema


def _steps_per_epoch(train_data: Iterable, cfg: TrainConfig) -> int:
    n = cfg.steps_per_epoch or len(train_data)
    return min(n, cfg.max_steps) if cfg.max_steps else n


def _resume(run: Run, trainer: Trainer, modules, optimizers, cfg: TrainConfig) -> ckpt.Progress:
    state = ckpt.read_last(run)
    run.pending_ema = None
    if state is None:
        if run.resuming and is_main_process():
            print(f"{run.path} has no checkpoint yet: training it from the start")
        run.reset_metrics()
        run.flush_config()
        return ckpt.Progress()
    path = run.checkpoint("last")
    ckpt.load_modules(modules, state["modules"], path)
    if set(state["optimizers"]) != set(optimizers):
        raise UsageError(f"{path} was written with optimizers {sorted(state['optimizers'])}, "
                         f"this setting has {sorted(optimizers)}")
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    trainer.load_extra_state(state.get("extra") or {})
    ckpt.set_rng_state(state["rng"])
    run.pending_ema = state.get("ema")
    progress = ckpt.Progress(**state["progress"])
    if progress.epoch >= cfg.epochs:
        progress.finished = True
    run.truncate_metrics(progress.epoch)
    run.flush_config()
    if is_main_process():
        done = "finished; nothing to train" if progress.finished else f"resuming after epoch {progress.epoch}"
        print(f"{run.path}: {done}")
    return progress


def _batches(data: Iterable, steps: int) -> Iterator:
    """Exactly `steps` batches, re-iterating `data` as often as needed."""
    given = 0
    while given < steps:
        empty = True
        for batch in data:
            empty = False
            yield batch
            given += 1
            if given >= steps:
                return
        if empty:
            raise UsageError("the training data yielded no batch (too few examples for one batch?)")


def _set_train(modules: dict[str, nn.Module], mode: bool) -> None:
    for m in modules.values():
        m.train(mode)


def _train_epoch(trainer: Trainer, data: Iterable, steps: int, ctx: StepContext) -> dict:
    _set_train(ctx.modules, True)
    records, start, cfg = [], time.perf_counter(), ctx.cfg
    bar = tqdm(total=steps, desc=f"epoch {ctx.epoch}/{cfg.epochs}", leave=False,
               disable=None if ctx.accelerator.is_main_process else True)
    for batch in _batches(data, steps):
        with ctx.accelerator.autocast():
            out = trainer.train_step(batch, ctx)
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            bar.close()
            ctx.fail(f"{bad[0]} became {out[bad[0]]}")
        ctx.progress.step += 1
        records.append(out)
        bar.update(1)
        if "loss" in out:
            bar.set_postfix(loss=f"{out['loss']:.4f}")
        if cfg.log_every and ctx.progress.step % cfg.log_every == 0:
            ctx.run.log({"epoch": ctx.epoch, "step": ctx.progress.step, **{f"train/{k}": v for k, v in out.items()}})
    bar.close()
    record = {"epoch": ctx.epoch, "time/epoch": time.perf_counter() - start}
    record.update({f"train/{k}": v for k, v in _across_processes(trainer.summarize(records), ctx).items()})
    record["lr"] = next(iter(ctx.optimizers.values())).param_groups[0]["lr"]
    return record


def _across_processes(metrics: dict[str, float], ctx: StepContext) -> dict[str, float]:
    """The mean of each training metric over processes (each saw its own shard)."""
    if ctx.accelerator.num_processes == 1 or not metrics:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=ctx.device)
    return dict(zip(metrics, ctx.accelerator.reduce(values, reduction="mean").tolist()))


def _evaluate(trainer: Trainer, ctx: StepContext) -> dict[str, float]:
    _set_train(ctx.modules, False)
    unwrapped = {k: ctx.accelerator.unwrap_model(m) for k, m in ctx.modules.items()}
    if ctx.ema is not None:
        ctx.ema.swap(unwrapped)
    try:
        with torch.no_grad():
            return trainer.evaluate(ctx)
    finally:
        if ctx.ema is not None:
            ctx.ema.swap(unwrapped)
        _set_train(ctx.modules, True)


def _improved(value: float, best: float, mode: str) -> bool:
    return math.isnan(best) or (value < best if mode == "min" else value > best)


def _end_epoch(record: dict, ctx: StepContext, trainer: Trainer) -> bool:
    """Update best/early-stop state, log, and save checkpoints; True if early stopping fired."""
    cfg, progress, run = ctx.cfg, ctx.progress, ctx.run
    if cfg.monitor not in record:
        raise UsageError(f"train.monitor {cfg.monitor!r} is not a logged metric; logged: {', '.join(record)}")
    value = float(record[cfg.monitor])
    progress.epoch = record["epoch"]
    unwrapped = {k: ctx.accelerator.unwrap_model(m) for k, m in ctx.modules.items()}
    if _improved(value, progress.best_value, cfg.monitor_mode):
        progress.best_value, progress.best_epoch, progress.bad_epochs = value, progress.epoch, 0
        if ctx.ema is not None:
            ctx.ema.swap(unwrapped)
        run.save_checkpoint("best", ckpt.best_state(unwrapped, progress.epoch, cfg.monitor, value))
        if ctx.ema is not None:
            ctx.ema.swap(unwrapped)
    else:
        progress.bad_epochs += 1
    stopped = cfg.early_stop > 0 and progress.bad_epochs >= cfg.early_stop
    progress.finished = stopped or progress.epoch >= cfg.epochs
    run.log(record)
    run.save_checkpoint("last", ckpt.last_state(unwrapped, ctx.optimizers, ctx.ema, progress, trainer.extra_state()))
    ctx.accelerator.wait_for_everyone()  # no process reads a checkpoint before the main one wrote it
    return stopped


def _epoch_line(record: dict, cfg: TrainConfig) -> str:
    shown = [k for k in record if k.endswith(("loss", "accuracy"))] + [cfg.monitor]
    parts = [f"{k} {record[k]:.4f}" for k in dict.fromkeys(shown) if k in record]
    return f"epoch {record['epoch']}/{cfg.epochs}  " + "  ".join(parts) + f"  ({record['time/epoch']:.1f}s)"


def fit_summary(result: FitResult, run: Run, trainer: Trainer) -> dict:
    """What every trained run reports: best and last epoch, early stop, mean time per epoch, size.

    Times come from metrics.jsonl, so a resumed run counts the epochs before the interruption.
    """
    times = [r["time/epoch"] for r in run.read_metrics() if "time/epoch" in r]
    params = sum(p.numel() for m in trainer.modules().values() for p in m.parameters())
    return {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "time_per_epoch": sum(times) / max(len(times), 1), "params": params}
