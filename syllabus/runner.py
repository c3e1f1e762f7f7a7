"""Running experiments: one run, a sweep over settings, every experiment, or a resume.

All configs (every sweep point, every experiment of `run all`) are built and checked before
the first training step, so a typo fails in a second, not after an hour. Declared reuse
(`Experiment.reuses`) is resolved here: an experiment is handed an upstream run directory
through a config key and never imports the runner or another experiment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from syllabus import runs
from syllabus.config import apply_overrides, from_dict, get_value, leaves, point_label, sweep_points, to_dict
from syllabus.errors import RunFailed, UsageError
from syllabus.experiments import Experiment, get_experiment, read_run_config
from syllabus.launch import PointJob, check_launcher, job_state, submit
from syllabus.options import RunOptions, apply_options, options_dict, split_options
from syllabus.runs import Run, check_out_dir, is_main_process, new_run_dir, read_json, timestamp, write_json

# Settings a resumed run may change: none of them alters what the checkpoint holds.
RESUMABLE_KEYS = ("data.num_workers", "data.dir", "data.root", "train.log_every")


@dataclasses.dataclass
class Plan:
    """What to run for one experiment: a base config and its sweep points (maybe none)."""

    exp: Experiment
    profile: str
    cfg: Any
    points: list[dict[str, str]]
    options: RunOptions = dataclasses.field(default_factory=RunOptions)
    launcher: str = "local"


def plan(exp: Experiment, profile: str, overrides: dict[str, str], sweeps: dict[str, str],
         seed: int | None = None, launcher: str = "local") -> Plan:
    """Build and validate the config (and every sweep point) without running anything.

    `log.*` and `launcher.*` keys are run options (`syllabus.options`), not the experiment's.
    """
    overrides, options = split_options(overrides)
    check_launcher(launcher)
    if launcher != "local" and not sweeps:
        raise UsageError(f"--launcher {launcher} submits the points of a --sweep; for one run use e.g. "
                         "--sweep seed=0")
    cfg = exp.config(profile)
    if seed is not None:
        overrides = {**overrides, "seed": str(seed)}
    cfg = apply_overrides(cfg, overrides)
    points = sweep_points(cfg, sweeps) if sweeps else []
    for key, upstream in exp.reuses.items():
        if get_value(cfg, key) == "":
            upstream_plan(exp, profile, cfg, upstream)  # validated now; trained when this plan runs
    for point in points or [{}]:
        exp.validate(apply_overrides(cfg, point))
    return Plan(exp, profile, cfg, points, options, launcher)


def execute(p: Plan, out: Path, device: str, stamp: str | None = None) -> Path:
    """Run a plan; returns the path of its report (the comparison report for a sweep)."""
    check_out_dir(out)
    stamp = stamp or timestamp()
    p.cfg = resolve_reuse(p.exp, p.profile, p.cfg, out, device)
    if not p.points:
        run = Run(new_run_dir(out, p.exp.name, stamp), device, tensorboard=p.options.log.tensorboard)
        return run_one(p.exp, p.profile, p.cfg, run, options_dict(p.options))
    return run_sweep(p, out, device, stamp)


def upstream_plan(exp: Experiment, profile: str, cfg: Any, upstream: str) -> Plan:
    """The upstream run to train first, with the same profile; settings this run changed from its
    profile that the upstream also has (`data.root`, `seed`, ...) are handed on."""
    up = get_experiment(upstream)
    defaults, up_keys = exp.config(profile), leaves(up.config(profile))
    text = lambda v: ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    shared = {k: text(get_value(cfg, k)) for k in leaves(cfg)
              if k in up_keys and get_value(cfg, k) != get_value(defaults, k)}
    return plan(up, profile, shared, {})


def resolve_reuse(exp: Experiment, profile: str, cfg: Any, out: Path, device: str) -> Any:
    """Point each `reuses` key that is empty at an upstream run, training one first if needed."""
    for key, upstream in exp.reuses.items():
        if get_value(cfg, key) == "":
            print(f"[{exp.name}] {key} is not set: running {upstream} ({profile}) first")
            report = execute(upstream_plan(exp, profile, cfg, upstream), out, device)
            cfg = apply_overrides(cfg, {key: str(report.parent)})
    return cfg


def run_one(exp: Experiment, profile: str, cfg: Any, run: Run, options: dict | None = None) -> Path:
    """Run one config in `run` (holding its lock); the config is written before training starts."""
    run.lock()
    try:
        if run.resuming:
            run.defer_config(exp.name, profile, to_dict(cfg), options)  # written once the checkpoint has loaded
        else:
            run.save_config(exp.name, profile, to_dict(cfg), options)
        if is_main_process():
            print(f"[{exp.name}] {profile} -> {run.path}")
        exp.run(cfg, run)
        run.flush_config()
        return exp.report(run) if is_main_process() else run.path / "report.html"
    except KeyboardInterrupt:
        runs.INTERRUPTED = run.path  # named by the command line's message
        raise
    finally:
        run.unlock()


def run_sweep(p: Plan, out: Path, device: str, stamp: str) -> Path:
    sweep_dir, info = start_sweep(p, out, device, stamp)
    return run_points(info, sweep_dir, info["points"], p.cfg)


def start_sweep(p: Plan, out: Path, device: str, stamp: str) -> tuple[Path, dict]:
    """The sweep directory and its `sweep.json` (every point pending, each with its run dir)."""
    sweep_dir = new_run_dir(out, p.exp.name, stamp, "sweep")
    entries = [{"label": point_label(point), "overrides": point, "status": "pending",
                "dir": str(new_run_dir(out, p.exp.name, stamp, point_label(point)))} for point in p.points]
    info = {"experiment": p.exp.name, "profile": p.profile, "launcher": p.launcher, "device": device,
            "options": options_dict(p.options), "base": to_dict(p.cfg), "points": entries}
    write_json(sweep_dir / "sweep.json", info)
    return sweep_dir, info


def run_points(info: dict, sweep_dir: Path, entries: list[dict], base_cfg: Any) -> Path:
    """Run (or submit) the given points of a sweep; returns the comparison report's path."""
    exp, profile, device, options = get_experiment(info["experiment"]), info["profile"], info["device"], info["options"]
    if info["launcher"] != "local":
        jobs = [PointJob(exp.name, profile, to_dict(apply_overrides(base_cfg, e["overrides"])), e["dir"], device,
                         options) for e in entries]
        for e, job_id in zip(entries, submit(info["launcher"], sweep_dir, jobs, apply_options(options))):
            e.update(status="pending", job_id=job_id)
        write_json(sweep_dir / "sweep.json", info)
        print(f"[{exp.name}] {len(entries)} job(s) submitted; `syllabus report {sweep_dir}` shows what has finished")
        return compare(sweep_dir, allow_empty=True)
    for e in entries:
        e.update(run_point(exp, profile, apply_overrides(base_cfg, e["overrides"]), e, device, options))
        write_json(sweep_dir / "sweep.json", info)
    return compare(sweep_dir)


def run_point(exp: Experiment, profile: str, cfg: Any, entry: dict, device: str, options: dict) -> dict:
    """Run one sweep point in its directory (resuming it if it has a checkpoint); its status."""
    run = Run(Path(entry["dir"]), device, resuming=(Path(entry["dir"]) / "checkpoints" / "last.pt").exists(),
              tensorboard=options["log"]["tensorboard"])
    try:
        run_one(exp, profile, cfg, run, options)
        return {"status": "ok"}
    except RunFailed as err:  # one diverging point does not stop the sweep
        print(f"[{exp.name}] {entry['label']} failed: {err}")
        return {"status": "failed", "error": str(err)}


def compare(sweep_dir: Path, allow_empty: bool = False) -> Path:
    """(Re-)render the comparison report of a sweep: its finished points; pending and failed listed."""
    sweep_dir = Path(sweep_dir)
    info = read_json(sweep_dir / "sweep.json")
    exp = get_experiment(info["experiment"])
    for e in info["points"]:
        e["status"], e["error"] = job_state(sweep_dir, e)
    write_json(sweep_dir / "sweep.json", info)
    points = [(e["label"], Path(e["dir"])) for e in info["points"] if e["status"] == "ok"]
    others = [e for e in info["points"] if e["status"] != "ok"]
    if not points and not allow_empty:
        raise RunFailed(f"no finished points to compare in {sweep_dir}")
    return exp.compare(points, sweep_dir, others)


def resume_sweep(sweep_dir: Path, launcher: str | None) -> Path:
    """Run or resubmit the unfinished points of a sweep; finished ones are skipped."""
    info = read_json(Path(sweep_dir) / "sweep.json")
    exp = get_experiment(info["experiment"])
    if launcher is not None:
        check_launcher(launcher)
        info["launcher"] = launcher
    info.setdefault("device", "auto")
    info.setdefault("options", options_dict(RunOptions()))
    todo = [e for e in info["points"] if job_state(Path(sweep_dir), e)[0] != "ok"]
    print(f"[{exp.name}] {len(info['points']) - len(todo)} point(s) finished, {len(todo)} to run")
    base = from_dict(exp.config_cls, info["base"]) if "base" in info else exp.config(info["profile"])
    if not todo:
        return compare(sweep_dir)
    return run_points(info, Path(sweep_dir), todo, base)


def resume(run_dir: Path, overrides: dict[str, str], device: str, launcher: str | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint, with its saved config.

    Only settings that do not change what the checkpoint holds may be overridden; the new
    config is written only after the checkpoint has loaded and matched.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"no such run directory: {run_dir}")
    if (run_dir / "sweep.json").exists():
        if overrides:
            raise UsageError("--resume of a sweep continues its points with their own settings; drop --set")
        return resume_sweep(run_dir, launcher)
    if launcher not in (None, "local"):
        raise UsageError(f"--launcher {launcher} resumes a sweep directory; {run_dir} is one run")
    exp, profile, cfg = read_run_config(run_dir)
    refused = sorted(set(overrides) - set(RESUMABLE_KEYS))
    if refused:
        raise UsageError(f"--resume continues a run with its own settings; {', '.join(refused)} cannot change "
                         f"(only {', '.join(RESUMABLE_KEYS)}); start a new run instead")
    cfg = apply_overrides(cfg, overrides)
    exp.validate(cfg)
    options = read_json(run_dir / "config.json").get("options") or options_dict(RunOptions())
    run = Run(run_dir, device, resuming=True, tensorboard=options["log"]["tensorboard"])
    return run_one(exp, profile, cfg, run, options)


def report(run_dir: Path) -> Path:
    """Re-render the report of a run, or the comparison report of a sweep."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"no such run directory: {run_dir}")
    if (run_dir / "sweep.json").exists():
        return compare(run_dir)
    exp, _, _ = read_run_config(run_dir)
    return exp.report(Run(run_dir))
