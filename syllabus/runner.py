"""Running experiments: one run, a sweep over settings, every experiment, or a resume.

All configs (every sweep point, every experiment of `run all`) are built and checked
before the first training step, so a typo fails in a second, not after an hour.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from syllabus.config import apply_overrides, from_dict, get_value, leaves, point_label, sweep_points, to_dict
from syllabus.errors import RunFailed, UsageError
from syllabus.experiments import EXPERIMENTS, Experiment, get_experiment
from syllabus.runs import Run, new_run_dir, read_json, timestamp, write_json


@dataclasses.dataclass
class Plan:
    """What to run for one experiment: a base config and its sweep points (maybe none)."""

    exp: Experiment
    profile: str
    cfg: Any
    points: list[dict[str, str]]


def plan(exp: Experiment, profile: str, overrides: dict[str, str], sweeps: dict[str, str],
         seed: int | None = None) -> Plan:
    """Build and validate the config (and every sweep point) without running anything."""
    cfg = exp.config(profile)
    if seed is not None:
        overrides = {**overrides, "seed": str(seed)}
    cfg = apply_overrides(cfg, overrides)
    points = sweep_points(cfg, sweeps) if sweeps else []
    for point in points or [{}]:
        exp.check(apply_overrides(cfg, point))
    return Plan(exp, profile, cfg, points)


def execute(p: Plan, out: Path, device: str, stamp: str | None = None) -> Path:
    """Run a plan; returns the path of its report (the comparison report for a sweep)."""
    stamp = stamp or timestamp()
    if not p.points:
        run = Run(new_run_dir(out, p.exp.name, stamp), device)
        return run_one(p.exp, p.profile, p.cfg, run)
    return run_sweep(p, out, device, stamp)


def run_one(exp: Experiment, profile: str, cfg: Any, run: Run) -> Path:
    run.save_config(exp.name, profile, to_dict(cfg))
    print(f"[{exp.name}] {profile} -> {run.path}")
    exp.run(cfg, run)
    return exp.report(run)


def run_sweep(p: Plan, out: Path, device: str, stamp: str) -> Path:
    sweep_dir = new_run_dir(out, p.exp.name, stamp, "sweep")
    entries = []
    for point in p.points:
        label = point_label(point)
        run = Run(new_run_dir(out, p.exp.name, stamp, label), device)
        entry = {"label": label, "overrides": point, "dir": str(run.path), "status": "ok"}
        try:
            run_one(p.exp, p.profile, apply_overrides(p.cfg, point), run)
        except RunFailed as e:  # one diverging point does not stop the sweep
            print(f"[{p.exp.name}] {label} failed: {e}")
            entry.update(status="failed", error=str(e))
        entries.append(entry)
        write_json(sweep_dir / "sweep.json", {"experiment": p.exp.name, "profile": p.profile, "points": entries})
    return compare(sweep_dir)


def compare(sweep_dir: Path) -> Path:
    """(Re-)render the comparison report of a sweep directory."""
    info = read_json(Path(sweep_dir) / "sweep.json")
    exp = get_experiment(info["experiment"])
    points = [(e["label"], Path(e["dir"])) for e in info["points"] if e["status"] == "ok"]
    if not points:
        raise RunFailed(f"no successful points to compare in {sweep_dir}")
    return exp.compare(points, Path(sweep_dir))


def resume(run_dir: Path, overrides: dict[str, str], device: str) -> Path:
    """Continue an interrupted run from its last checkpoint, with its saved config."""
    saved = read_json(Path(run_dir) / "config.json")
    exp = get_experiment(saved["experiment"])
    cfg = apply_overrides(from_dict(exp.config_cls, saved["config"]), overrides)
    exp.check(cfg)
    return run_one(exp, saved["profile"], cfg, Run(Path(run_dir), device))


def report(run_dir: Path) -> Path:
    """Re-render the report of a run, or the comparison report of a sweep."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"no such run directory: {run_dir}")
    if (run_dir / "sweep.json").exists():
        return compare(run_dir)
    saved = read_json(run_dir / "config.json")
    return get_experiment(saved["experiment"]).report(Run(run_dir))


def plan_all(profile: str, overrides: dict[str, str], seed: int | None) -> list[Plan]:
    """A plan per experiment; each `--set` key applies where an experiment has it."""
    plans, used = [], set()
    for _, exp in EXPERIMENTS.items():
        valid = leaves(exp.config(profile))
        mine = {k: v for k, v in overrides.items() if k in valid}
        used |= set(mine)
        plans.append(plan(exp, profile, mine, exp.default_sweep, seed))
    unused = set(overrides) - used
    if unused:
        raise UsageError(f"no experiment has the key(s) {', '.join(sorted(unused))}")
    return plans


def execute_all(plans: list[Plan], out: Path, device: str) -> Path:
    """Run every plan, then write `out/index.html` linking each report."""
    stamp, rows, done = timestamp(), [], {}
    for p in plans:
        if p.exp.reuses in done and get_value(p.cfg, "model.run") == "":
            p.cfg = apply_overrides(p.cfg, {"model.run": str(done[p.exp.reuses])})
        try:
            path = execute(p, out, device, stamp)
            done[p.exp.name] = path.parent
            rows.append((p, path, _headline(p.exp, path.parent), ""))
        except RunFailed as e:
            rows.append((p, None, {}, str(e)))
    return write_index(Path(out), rows)


def _headline(exp: Experiment, run_dir: Path) -> dict[str, Any]:
    summary = read_json(run_dir / "summary.json")
    return {k: summary[k] for k in exp.headline if k in summary}


def write_index(out: Path, rows: list) -> Path:
    """A small page over the reports of `run all`."""
    from syllabus.report.html import Report

    rep = Report("syllabus: all experiments", f"profile {rows[0][0].profile}" if rows else "")
    rep.section("Experiments")
    table = []
    for p, path, headline, error in rows:
        numbers = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in headline.items())
        table.append({"experiment": p.exp.name, "what": p.exp.title, "status": error or "ok", "headline": numbers})
        if path is not None:
            rep.link(str(path.relative_to(out)), f"{p.exp.name}: report")
    rep.table(table)
    return rep.write(out / "index.html")
