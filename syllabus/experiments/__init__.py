"""Every experiment, by name. Each module registers its experiment when imported:
`get_experiment` imports only the one asked for (a run does not pay for the others' imports),
`all_experiments` imports them all."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syllabus.errors import UsageError
from syllabus.registry import Registry
from syllabus.runs import Run

PROFILES = ("smoke", "demo", "quick", "full")


@dataclass
class Experiment:
    """One experiment: its config profiles, how to run it and how to report on it.

    Args:
        name: the command-line name.
        title: one line for `syllabus list` and the index card.
        profiles: profile name -> config factory: "smoke", "quick", "full", and "demo" where the
            quick takes longer than the experiment's share of `run all` (elsewhere demo = quick).
        run: `run(cfg, run) -> summary dict`; writes checkpoints, metrics and summary.json.
        sections: `sections(report, run)` adds the experiment's own sections to the single-run
            page; the skeleton (`syllabus.report.pages`) adds title, headline table, curves
            and configuration.
        sweep_sections: `sweep_sections(report, points)` adds the experiment's own sections to
            a sweep's comparison page (points: `Point`s with label, run dir, summary).
        build_model: `build_model(cfg, summary) -> nn.Module`, so `load_trained` can rebuild
            this experiment's model from any of its run directories.
        check: `check(cfg)` raises UsageError before any training if the run cannot start.
        headline: summary keys shown in tables and on the index card.
        key_figure: the plot (`plots/<name>.png`) shown on the index card.
        default_sweep: the sweep `syllabus run all` uses ({key: "v1,v2,..."}).
        reuses: {config key: upstream experiment}: the runner points the key at an upstream run
            (a given one, the one `run all` just made, or one it trains first).
        monitors: metrics `train.monitor` may name (checked before training); empty = any.
        budget_s: this experiment's expected time in `run all` (its demo profile), in seconds on one
            thread beside another job; orders the jobs (longest first) and estimates what remains.
    """

    name: str
    title: str
    profiles: dict[str, Callable[[], Any]]
    run: Callable[[Any, Run], dict]
    sections: Callable[[Any, Run], None]
    sweep_sections: Callable[[Any, list], None] | None = None
    build_model: Callable[[Any, dict], Any] | None = None
    check: Callable[[Any], None] = lambda cfg: None
    headline: list[str] = field(default_factory=list)
    key_figure: str = ""
    default_sweep: dict[str, str] = field(default_factory=dict)
    reuses: dict[str, str] = field(default_factory=dict)
    monitors: tuple[str, ...] = ()
    budget_s: float = 120.0

    def config(self, profile: str) -> Any:
        if profile == "demo" and profile not in self.profiles:
            profile = "quick"
        if profile not in self.profiles:
            valid = sorted({*self.profiles, "demo"}, key=PROFILES.index)
            raise UsageError(f"unknown profile {profile!r} for {self.name}; valid: {', '.join(valid)}")
        return self.profiles[profile]()

    def validate(self, cfg: Any) -> None:
        """Everything that can be known wrong before training: the monitor, then `check`."""
        monitor = getattr(getattr(cfg, "train", None), "monitor", None)
        if self.monitors and monitor is not None and monitor not in self.monitors:
            raise UsageError(f"train.monitor {monitor!r} is not a metric of {self.name}; "
                             f"valid: {', '.join(self.monitors)}")
        self.check(cfg)

    def report(self, run: Run) -> Path:
        from syllabus.report.pages import single_page

        return single_page(self, run)

    def compare(self, points: list[tuple[str, Path]], out: Path, unfinished: list[dict] = ()) -> Path:
        from syllabus.report.pages import sweep_page

        return sweep_page(self, points, out, unfinished)

    @property
    def config_cls(self) -> type:
        return type(next(iter(self.profiles.values()))())


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(exp: Experiment) -> Experiment:
    return EXPERIMENTS.add(exp.name, exp)


def read_run_config(run_dir: Path) -> tuple[Experiment, str, Any]:
    """(experiment, profile, config) of a run directory, each defect one UsageError."""
    from syllabus.config import from_dict
    from syllabus.runs import read_json

    path = Path(run_dir) / "config.json"
    saved = read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UsageError(f"{path} is not a run configuration (expected an object with experiment, profile, config)")
    if "experiment" not in saved:
        raise UsageError(f"{path} does not say which experiment wrote it (no 'experiment' key)")
    exp = get_experiment(str(saved["experiment"]))
    try:
        cfg = from_dict(exp.config_cls, saved["config"])
    except (TypeError, UsageError) as e:
        raise UsageError(f"{path} is not a configuration of {exp.name} ({e})") from None
    return exp, str(saved.get("profile", "")), cfg


def finished_run(path: Path, key: str, upstream: str, hint: str = "") -> Any:
    """The config of a finished `upstream` run at `path`, which the config key `key` names (declared
    reuse); one UsageError for each defect: not a run directory (`hint` added), another experiment's
    run, no best checkpoint."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UsageError(f"{key}: {path} is not a run directory (a {upstream} run{hint})")
    exp, _, cfg = read_run_config(path)
    if exp.name != upstream:
        raise UsageError(f"{key}: {path} is a {exp.name!r} run, not a {upstream} run")
    if not (path / "checkpoints" / "best.pt").is_file():
        raise UsageError(f"{key}: {path} has no checkpoints/best.pt (did the run finish?)")
    return cfg


def load_trained(run_dir: Path, which: str = "best") -> tuple[Any, Any, dict]:
    """Rebuild any run's trained model: (model in eval mode, its config, its summary).

    The run's saved config and its own experiment's `build_model` make the model; the loop
    core's checkpoint (`best` or `last`) fills it. Experiments use this instead of importing
    each other.
    """
    from syllabus.train.state import load_best

    run = Run(Path(run_dir))
    exp, _, cfg = read_run_config(run.path)
    if exp.build_model is None:
        raise UsageError(f"{exp.name} runs hold no reusable model ({run.path})")
    summary = run.read_summary()
    model = exp.build_model(cfg, summary)
    load_best(run, {"model": model}, which)
    return model.eval(), cfg, summary


# In this order `syllabus list` shows them and `syllabus run all` runs them: name -> module.
_MODULES = {"resnet-norms": "resnet_norms", "gradcam": "gradcam", "vae": "vae", "gan": "gan",
            "resnet-transfer": "resnet_transfer", "slot-attention": "slot_attention",
            "slot-diffusion": "slot_diffusion", "vit-analysis": "vit_analysis", "clip": "clip",
            "math-programs": "math_programs"}


def get_experiment(name: str) -> Experiment:
    if name not in _MODULES:
        raise UsageError(f"unknown experiment {name!r}; valid: {', '.join(_MODULES)}")
    if name not in EXPERIMENTS:
        importlib.import_module(f"syllabus.experiments.{_MODULES[name]}")
    return EXPERIMENTS.get(name)


def all_experiments() -> list[Experiment]:
    """Every experiment, in the listing order."""
    return [get_experiment(name) for name in _MODULES]
