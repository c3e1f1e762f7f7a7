"""`run all --jobs N`: experiments, and the points of their sweeps, as jobs over N processes.

Each job runs in a spawned worker on `cpu_count // N` torch threads, its output in
`OUT/logs/<experiment>.log` (a sweep point: `OUT/logs/<experiment>.<point>.log`). A sweep's
points are separate jobs, so the six runs of the norm comparison spread over every slot instead
of holding one; once its last point has ended, the comparison page is written here. Ready jobs
start longest first (by the experiments' `budget_s`), which keeps the slots ending together. An
experiment that reuses another's run waits until that one has ended and is handed its directory.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from syllabus.config import apply_overrides, get_value
from syllabus.errors import RunFailed
from syllabus.experiments import get_experiment
from syllabus.options import options_dict
from syllabus.runner import Plan, compare, execute, run_point, start_sweep
from syllabus.runs import write_json
from syllabus.threads import POOL_VARIABLES, limit_threads


@dataclass
class Job:
    plan: Plan
    seconds: float  # expected, for the longest-first order
    log: Path
    point: dict | None = None  # a sweep point's entry of `sweep.json`; None: the whole plan


@dataclass
class Sweep:
    """A sweep split into point jobs: its directory, `sweep.json` content and jobs still out."""
    dir: Path
    info: dict
    left: int
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_parallel(plans: list[Plan], out: Path, device: str, stamp: str, jobs: int, entries: dict[str, dict],
                 on_end) -> None:
    """Run every plan; `entries[name]` gets each experiment's {report, error, seconds}, and
    `on_end(name, spent)` is called as each experiment ends, `spent` the budget of the jobs
    ended so far (its points, for a sweep still running)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"[run all] {len(plans)} experiments, {jobs} jobs at a time on {threads} thread(s) each "
          f"(a sweep's points are jobs of their own); their output: {logs.resolve()}/<experiment>.log")
    names = {p.exp.name for p in plans}
    waiting, ready, running, sweeps = list(plans), [], {}, {}  # running: Future -> Job
    spent = 0.0  # budget of the jobs ended
    saved = {name: os.environ.get(name) for name in POOL_VARIABLES}
    os.environ.update({name: str(threads) for name in POOL_VARIABLES})  # read by the workers' libraries at start
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        while waiting or ready or running:
            for p in [p for p in waiting if ready_to_start(p, names, entries)]:
                waiting.remove(p)
                hand_over(p, entries)
                ready += _split(p, out, device, stamp, logs, sweeps)
            ready.sort(key=lambda j: -j.seconds)
            while ready and len(running) < jobs:
                job = ready.pop(0)
                running[_submit(pool, job, out, device, stamp, threads)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                name, spent = job.plan.exp.name, spent + job.seconds
                if job.point is None:
                    entries[name] = _outcome(future, job.log)
                elif _point_ended(sweeps[name], job, _outcome(future, job.log)):
                    entries[name] = _finish(sweeps.pop(name))
                if name in entries:
                    on_end(name, spent)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ready_to_start(p: Plan, names: set[str], entries: dict[str, dict]) -> bool:
    """Its upstream runs of this `run all`, if any, have ended."""
    return all(up in entries or up not in names or get_value(p.cfg, key) != "" for key, up in p.exp.reuses.items())


def hand_over(p: Plan, entries: dict[str, dict]) -> None:
    """Point each reuse key still empty at the upstream run made here, if it succeeded."""
    for key, upstream in p.exp.reuses.items():
        report = entries.get(upstream, {}).get("report")
        if report is not None and get_value(p.cfg, key) == "":
            p.cfg = apply_overrides(p.cfg, {key: str(Path(report).parent)})


def _split(p: Plan, out: Path, device: str, stamp: str, logs: Path, sweeps: dict[str, Sweep]) -> list[Job]:
    """One job for a single run (or a plan that must first train its upstream), one per sweep point."""
    name = p.exp.name
    unresolved = any(get_value(p.cfg, key) == "" for key in p.exp.reuses)
    if not p.points or unresolved:
        return [Job(p, p.exp.budget_s, logs / f"{name}.log")]
    sweep_dir, info = start_sweep(p, out, device, stamp)
    sweeps[name] = Sweep(sweep_dir, info, len(info["points"]))
    share = p.exp.budget_s / len(info["points"])
    return [Job(p, share, logs / f"{name}.{e['label']}.log", e) for e in info["points"]]


def _submit(pool: ProcessPoolExecutor, job: Job, out: Path, device: str, stamp: str, threads: int) -> Future:
    p = job.plan
    if job.point is None:
        return pool.submit(_job, p.exp.name, p.profile, p.cfg, p.points, p.options, out, device, stamp, threads,
                           job.log)
    cfg = apply_overrides(p.cfg, job.point["overrides"])
    return pool.submit(_point_job, p.exp.name, p.profile, cfg, job.point, device, options_dict(p.options), threads,
                       job.log)


def _point_ended(sweep: Sweep, job: Job, outcome: dict) -> bool:
    """Record a point's outcome in its sweep; True when it was the last one out."""
    job.point.update(status="ok" if outcome.get("status", "failed") == "ok" else "failed")
    if job.point["status"] != "ok":
        job.point["error"] = outcome.get("error", "")
        sweep.errors.append(f"{job.point['label']}: {job.point['error']}")
    sweep.seconds += outcome.get("seconds", 0.0)
    sweep.left -= 1
    write_json(sweep.dir / "sweep.json", sweep.info)
    return sweep.left == 0


def _finish(sweep: Sweep) -> dict:
    """The sweep's comparison page, once every point has ended; seconds = its points' sum."""
    entry = {"report": None, "error": "", "seconds": sweep.seconds}
    try:
        entry["report"] = compare(sweep.dir)
    except RunFailed as e:
        entry["error"] = f"{e} ({'; '.join(sweep.errors)})"
    return entry


def _outcome(future: Future, log: Path) -> dict:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - one job's failure must not stop the others
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"report": None, "error": f"{first} (see {log})", "seconds": 0.0}


def _to_log(log: Path, threads: int) -> None:
    """In a worker: this job's thread pools and its stdout/stderr going to `log`."""
    limit_threads(threads)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)


def run_plan(p: Plan, out: Path, device: str, stamp: str) -> dict:
    """Execute one plan: {report (None if it failed), error, seconds}."""
    began, entry = time.perf_counter(), {"report": None, "error": ""}
    try:
        entry["report"] = execute(p, out, device, stamp)
    except RunFailed as e:
        entry["error"] = str(e)
    entry["seconds"] = time.perf_counter() - began
    return entry


def _job(name: str, profile: str, cfg, points: list, options, out: Path, device: str, stamp: str, threads: int,
         log: Path) -> dict:
    """One experiment (a single run, or a sweep with its upstream to train first) in a worker."""
    _to_log(log, threads)
    entry = run_plan(Plan(get_experiment(name), profile, cfg, points, options), out, device, stamp)
    if entry["error"]:
        entry["error"] += f" (see {log})"
    return entry


def _point_job(name: str, profile: str, cfg, point: dict, device: str, options: dict, threads: int,
               log: Path) -> dict:
    """One sweep point in a worker: {status, error, seconds}."""
    _to_log(log, threads)
    began = time.perf_counter()
    outcome = run_point(get_experiment(name), profile, cfg, point, device, options)
    if outcome["status"] != "ok":
        outcome["error"] += f" (see {log})"
    return {**outcome, "seconds": time.perf_counter() - began}
