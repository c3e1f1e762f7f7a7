"""Settings of how runs are executed, beside any experiment's own config: `log.*` and `launcher.*`.

    syllabus run EXP --set log.tensorboard=true
    syllabus run EXP --sweep ... --launcher slurm --set launcher.partition=gpu --set launcher.gpus=1

They are split off the `--set` keys before the experiment's config sees them, checked like any
other key, and saved in each run's config.json under "options".
"""

from __future__ import annotations

from dataclasses import dataclass

from syllabus.config import apply_overrides, from_dict, nested, ranged, to_dict

PREFIXES = ("log.", "launcher.")


@dataclass
class LogConfig:
    tensorboard: bool = False  # also write metrics.jsonl's records as TensorBoard events (runs/.../tensorboard)


@dataclass
class LauncherConfig:
    """SLURM job settings of `--launcher slurm` (one job per sweep point, through submitit)."""

    partition: str = ""  # empty: the cluster's default partition
    gpus: int = ranged(1, 0)  # GPUs per job
    cpus: int = ranged(8, 1)  # CPU cores per job
    mem_gb: int = ranged(32, 1)
    time: int = ranged(240, 1)  # minutes per job; a preempted or timed-out job is requeued and resumes
    account: str = ""
    qos: str = ""
    max_parallel: int = ranged(32, 1)  # jobs of the sweep running at once


@dataclass
class RunOptions:
    log: LogConfig = nested(LogConfig)
    launcher: LauncherConfig = nested(LauncherConfig)


def split_options(overrides: dict[str, str]) -> tuple[dict[str, str], RunOptions]:
    """(the experiment's overrides, the run options) from `--set` keys."""
    mine = {k: v for k, v in overrides.items() if k.startswith(PREFIXES)}
    rest = {k: v for k, v in overrides.items() if k not in mine}
    return rest, apply_overrides(RunOptions(), mine)


def options_dict(options: RunOptions) -> dict:
    return to_dict(options)


def apply_options(saved: dict) -> RunOptions:
    """RunOptions from a saved `options_dict`."""
    return from_dict(RunOptions, saved)
