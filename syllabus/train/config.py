"""`train.*` settings of the loop core, with their ranges (checked before anything runs)."""

from __future__ import annotations

from dataclasses import dataclass

from syllabus.config import choice, ranged


@dataclass
class TrainConfig:
    """Optimisation settings shared by every trainable experiment.

    An epoch is one pass over the training data, or exactly `steps_per_epoch` batches when
    that is set (the data is re-iterated as needed). Schedules are per epoch (cosine, step,
    exponential), after a linear warm-up of `warmup_steps` optimizer steps.
    """

    epochs: int = ranged(10, 1)
    steps_per_epoch: int = ranged(0, 0)  # 0 = one pass over the training data
    batch_size: int = ranged(64, 1)
    optimizer: str = choice("sgd", ["sgd", "adam", "adamw"])
    lr: float = ranged(0.1, 0, 10, lo_open=True)
    momentum: float = ranged(0.9, 0, 1)
    beta1: float = ranged(0.9, 0, 1, hi_open=True)  # Adam's betas
    beta2: float = ranged(0.999, 0, 1, hi_open=True)
    weight_decay: float = ranged(5e-4, 0)
    schedule: str = choice("cosine", ["constant", "cosine", "step", "exponential"])
    warmup_steps: int = ranged(0, 0)  # linear learning-rate warm-up, in optimizer steps
    step_size: int = ranged(10, 1)  # epochs between decays, for "step"
    gamma: float = ranged(0.1, 0, 1, lo_open=True)  # decay per step ("step") or per epoch ("exponential")
    monitor: str = "val/accuracy"  # metric that picks best.pt and drives early stopping
    monitor_mode: str = choice("max", ["max", "min"])  # whether larger or smaller `monitor` is better
    early_stop: int = ranged(0, 0)  # patience in epochs without improvement; 0 = off
    grad_clip: float = ranged(0.0, 0)  # max global grad norm per optimizer; 0 = off
    ema: float = ranged(0.0, 0, 1, hi_open=True)  # decay of a weight EMA used for evaluation; 0 = off
    precision: str = choice("no", ["no", "fp16", "bf16", "auto"])  # auto: bf16 where the hardware has it
    max_steps: int = ranged(0, 0)  # cap on steps per epoch (smoke profiles); 0 = no cap
    log_every: int = ranged(20, 0)  # steps between per-step records; 0 = none
    explode: float = ranged(1e4, 0)  # stop when a loss exceeds this many times its first value; 0 = off
