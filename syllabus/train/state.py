"""What a checkpoint of the loop core holds, and how it is checked when it is read back.

`last.pt` (written after every epoch) carries everything an exact resume needs: module and
optimizer states, the weight EMA, the RNG states, the loop's progress and the trainer's own
extra state. `best.pt` carries only module weights (the EMA weights when EMA is on).
Both are plain dicts of tensors and numbers, loaded with `weights_only=True`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from syllabus.errors import UsageError
from syllabus.runs import Run

LAST_FORMAT = "syllabus.loop/1"
BEST_FORMAT = "syllabus.best/1"


@dataclass
class Progress:
    """Where the loop stands; saved with every `last.pt`."""

    epoch: int = 0  # last finished epoch
    step: int = 0  # optimizer-step count of the loop (train steps)
    best_value: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False  # the last epoch ran or early stopping fired: a resume trains no more
    first_loss: dict[str, float] = field(default_factory=dict)  # per optimizer, for the explosion guard

    def state(self) -> dict:
        return asdict(self)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class WeightEMA:
    """Exponential moving average of the float parameters and buffers of named modules.

    After each optimizer step: ema <- decay * ema + (1 - decay) * weight. `swap(modules)` exchanges
    the live weights and the averages in place (call it twice to undo).
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                       for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        for name, m in modules.items():
            for k, v in m.state_dict().items():
                s = self.shadow[name][k]
                if v.dtype.is_floating_point:
                    s.lerp_(v.detach(), 1 - self.decay)
                else:
                    s.copy_(v)

    @torch.no_grad()
    def swap(self, modules: dict[str, nn.Module]) -> None:
        for name, m in modules.items():
            for k, v in m.state_dict().items():
                tmp = v.detach().clone()
                v.copy_(self.shadow[name][k])
                self.shadow[name][k].copy_(tmp)


def _state_dicts(modules: dict[str, nn.Module]) -> dict[str, dict]:
    return {name: m.state_dict() for name, m in modules.items()}


def load_modules(modules: dict[str, nn.Module], states: dict, path: Path) -> None:
    """Load each named module's weights; a missing name or a shape mismatch is one UsageError."""
    missing = set(modules) - set(states)
    if missing:
        raise UsageError(f"{path} holds no weights for {', '.join(sorted(missing))} "
                         f"(it has {', '.join(sorted(states)) or 'none'}): from another experiment or setting?")
    for name, m in modules.items():
        try:
            m.load_state_dict(states[name])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise UsageError(f"{path}: the weights of {name!r} do not fit this model's settings ({detail})") from None


def read_last(run: Run) -> dict | None:
    """`last.pt` of `run` checked for the loop's layout, or None when there is none."""
    path = run.checkpoint("last")
    state = run.load_checkpoint("last")
    if state is None:
        return None
    if not isinstance(state, dict) or state.get("format") != LAST_FORMAT:
        what = "a best.pt, not" if isinstance(state, dict) and state.get("format") == BEST_FORMAT else "not"
        raise UsageError(f"{path} is {what} a resumable checkpoint of the training loop; "
                         "restore the run's own last.pt or start a new run")
    return state


def best_state(modules: dict[str, nn.Module], epoch: int, monitor: str, value: float) -> dict:
    return {"format": BEST_FORMAT, "modules": _state_dicts(modules), "epoch": epoch, "monitor": monitor,
            "value": value}


def load_best(run: Run, modules, which: str = "best") -> dict:
    """Load `best.pt` (or `last.pt`) of `run` into a trainer's (or a dict of named) modules.

    Returns the checkpoint (its "epoch", "monitor" and "value" say which epoch it is).
    """
    if not isinstance(modules, dict):
        modules = modules.modules()
    path = run.checkpoint(which)
    state = run.load_checkpoint(which)
    if state is None:
        raise UsageError(f"missing checkpoint: {path}")
    if not isinstance(state, dict) or state.get("format") not in (BEST_FORMAT, LAST_FORMAT):
        raise UsageError(f"{path} is not a checkpoint written by the training loop")
    load_modules(modules, state["modules"], path)
    return state


def last_state(modules, optimizers, ema: WeightEMA | None, progress: Progress, extra: dict) -> dict:
    return {"format": LAST_FORMAT, "modules": _state_dicts(modules),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "ema": ema.shadow if ema is not None else None, "rng": rng_state(),
            "progress": progress.state(), "extra": extra}
