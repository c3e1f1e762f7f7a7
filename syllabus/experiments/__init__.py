"""Every experiment, by name. Importing this package registers them all."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syllabus.errors import UsageError
from syllabus.registry import Registry
from syllabus.runs import Run

PROFILES = ("smoke", "quick", "full")


@dataclass
class Experiment:
    """One experiment: its config profiles, how to run it and how to report on it.

    Args:
        name: the command-line name.
        title: one line for `syllabus list`.
        profiles: profile name -> config factory ("smoke", "quick", "full").
        run: `run(cfg, run) -> summary dict`; writes checkpoints, metrics and summary.
        reports: the module holding `single_report(run) -> report.html path`, built from
            what the run saved, and `sweep_report(points, out_dir) -> report.html path` over
            a sweep's points, each a (label, run dir) pair (imported when first needed).
        check: `check(cfg)` raises UsageError before any training if the run cannot start
            (e.g. real data missing).
        headline: summary keys shown in sweep and index tables.
        default_sweep: the sweep `syllabus run all` uses ({key: "v1,v2,..."}).
        reuses: in `syllabus run all`, the experiment whose run (or sweep) this one is
            pointed at through `model.run` (e.g. Grad-CAM explains the resnet-norms sweep).
    """

    name: str
    title: str
    profiles: dict[str, Callable[[], Any]]
    run: Callable[[Any, Run], dict]
    reports: str
    check: Callable[[Any], None] = lambda cfg: None
    headline: list[str] = field(default_factory=list)
    default_sweep: dict[str, str] = field(default_factory=dict)
    reuses: str = ""

    def config(self, profile: str) -> Any:
        if profile not in self.profiles:
            raise UsageError(f"unknown profile {profile!r} for {self.name}; valid: {', '.join(self.profiles)}")
        return self.profiles[profile]()

    def report(self, run: Run) -> Path:
        return importlib.import_module(self.reports).single_report(run)

    def compare(self, points: list[tuple[str, Path]], out: Path) -> Path:
        return importlib.import_module(self.reports).sweep_report(points, out)

    @property
    def config_cls(self) -> type:
        return type(next(iter(self.profiles.values()))())


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(exp: Experiment) -> Experiment:
    return EXPERIMENTS.add(exp.name, exp)


def get_experiment(name: str) -> Experiment:
    return EXPERIMENTS.get(name)


# In this order `syllabus list` shows them and `syllabus run all` runs them.
_MODULES = ("resnet_norms", "gradcam", "vae", "gan")
for _module in _MODULES:
    importlib.import_module(f"syllabus.experiments.{_module}")
