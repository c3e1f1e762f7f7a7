"""Optimizers from parameter groups, and the learning-rate schedule as a pure function.

The schedule is a factor of each group's base rate computed from (step, epoch) alone, so a
resumed run needs no scheduler state: a linear warm-up over `warmup_steps` optimizer steps,
times a per-epoch decay (cosine over `epochs`, "step" by `gamma` every `step_size` epochs,
"exponential" by `gamma` per epoch), the same values torch's CosineAnnealingLR, StepLR and
ExponentialLR give when stepped once per epoch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from syllabus.train.config import TrainConfig


def default_groups(modules: dict[str, nn.Module]) -> dict[str, list[dict]]:
    """One "main" optimizer over every trainable parameter of every module."""
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    return {"main": [{"params": params}]}


def resolve_groups(groups: list[dict], cfg: TrainConfig) -> list[dict]:
    """Each group's `lr` (absolute, or `lr_scale` x cfg.lr), kept also as `base_lr`."""
    out = []
    for g in groups:
        g = dict(g)
        scale = g.pop("lr_scale", 1.0)
        g["lr"] = g.get("lr", cfg.lr * scale)
        g["base_lr"] = g["lr"]
        g["params"] = [p for p in g["params"] if p.requires_grad]
        if g["params"]:
            out.append(g)
    return out


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = resolve_groups(groups, cfg)
    if not groups:
        raise ValueError("an optimizer got no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, epoch: int) -> float:
    """Multiplier of the base rate at optimizer step `step` (1-based) of epoch `epoch` (1-based)."""
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    e = epoch - 1  # epochs finished before this one
    if cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * e / cfg.epochs))
    elif cfg.schedule == "step":
        decay = cfg.gamma ** (e // cfg.step_size)
    elif cfg.schedule == "exponential":
        decay = cfg.gamma ** e
    else:
        decay = 1.0
    return warm * decay


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g.setdefault("base_lr", g["lr"]) * factor
