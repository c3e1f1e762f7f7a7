"""`syllabus run all`: every experiment, one after another or several at once, then the index.

With `jobs` > 1 (the default on a CPU-only machine with two or more cores) experiments run in
separate processes on `cpu_count // jobs` torch threads each: the small models of the quick
profiles use one core about as well as two, so two at once nearly halve the wall time. An
experiment that reuses another's run (gradcam after resnet-norms) starts once that one has
ended and is handed its directory, as in the sequential order. Each process writes its output
to `OUT/logs/<experiment>.log`; the terminal gets one line per experiment that ends.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from syllabus.config import apply_overrides, get_value, leaves
from syllabus.errors import RunFailed, UsageError
from syllabus.experiments import EXPERIMENTS, get_experiment
from syllabus.options import PREFIXES as OPTION_PREFIXES
from syllabus.runner import Plan, execute, plan
from syllabus.runs import check_out_dir, timestamp
from syllabus.threads import POOL_VARIABLES, limit_threads


def plan_all(profile: str, overrides: dict[str, str], seed: int | None) -> list[Plan]:
    """A plan per experiment; each `--set` key applies where an experiment has it."""
    plans, used = [], {k for k in overrides if k.startswith(OPTION_PREFIXES)}
    options = {k: overrides[k] for k in used}  # log.* and launcher.* apply to every run
    for _, exp in EXPERIMENTS.items():
        valid = leaves(exp.config(profile))
        mine = {k: v for k, v in overrides.items() if k in valid}
        used |= set(mine)
        plans.append(plan(exp, profile, {**mine, **options}, exp.default_sweep, seed))
    unused = set(overrides) - used
    if unused:
        raise UsageError(f"no experiment has the key(s) {', '.join(sorted(unused))}")
    return plans


def default_jobs(device: str) -> int:
    """2 on a CPU-only machine with at least two cores, else 1 (a GPU serves one run at a time)."""
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def execute_all(plans: list[Plan], out: Path, device: str, jobs: int = 1) -> Path:
    """Run every plan (reuse served from runs made here), then write `out/index.html`."""
    from syllabus.report.pages import index_page

    check_out_dir(out)
    stamp, start = timestamp(), time.perf_counter()
    entries: dict[str, dict] = {}
    if jobs <= 1:
        for p in plans:
            _hand_over(p, entries)
            entries[p.exp.name] = _run(p, out, device, stamp)
            print(_progress_line(plans, entries, p.exp.name, time.perf_counter() - start))
    else:
        _run_parallel(plans, out, device, stamp, jobs, entries, start)
    ordered = [{"exp": p.exp, **entries[p.exp.name]} for p in plans]
    return index_page(Path(out), ordered, plans[0].profile if plans else "")


def _hand_over(p: Plan, entries: dict[str, dict]) -> None:
    """Point each reuse key still empty at the upstream run made here, if it succeeded."""
    for key, upstream in p.exp.reuses.items():
        report = entries.get(upstream, {}).get("report")
        if report is not None and get_value(p.cfg, key) == "":
            p.cfg = apply_overrides(p.cfg, {key: str(Path(report).parent)})


def _run(p: Plan, out: Path, device: str, stamp: str) -> dict:
    began, entry = time.perf_counter(), {"report": None, "error": ""}
    try:
        entry["report"] = execute(p, out, device, stamp)
    except RunFailed as e:
        entry["error"] = str(e)
    entry["seconds"] = time.perf_counter() - began
    return entry


def _run_parallel(plans: list[Plan], out: Path, device: str, stamp: str, jobs: int, entries: dict[str, dict],
                  start: float) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"[run all] {len(plans)} experiments, {jobs} at a time on {threads} thread(s) each; "
          f"their output: {logs.resolve()}/<experiment>.log")
    names = {p.exp.name for p in plans}
    waiting, running = list(plans), {}  # running: Future -> Plan
    saved = {name: os.environ.get(name) for name in POOL_VARIABLES}
    os.environ.update({name: str(threads) for name in POOL_VARIABLES})  # read by the workers' libraries at start
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        while waiting or running:
            for p in [p for p in waiting if _ready(p, names, entries)][:jobs - len(running)]:
                waiting.remove(p)
                _hand_over(p, entries)
                running[pool.submit(_job, p.exp.name, p.profile, p.cfg, p.points, p.options, out, device, stamp,
                                    threads, logs / f"{p.exp.name}.log")] = p
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                p = running.pop(future)
                entries[p.exp.name] = _outcome(future, logs / f"{p.exp.name}.log")
                print(_progress_line(plans, entries, p.exp.name, time.perf_counter() - start))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _ready(p: Plan, names: set[str], entries: dict[str, dict]) -> bool:
    """Its upstream runs of this `run all`, if any, have ended."""
    return all(up in entries or up not in names or get_value(p.cfg, key) != "" for key, up in p.exp.reuses.items())


def _outcome(future: Future, log: Path) -> dict:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - one experiment's failure must not stop the others
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"report": None, "error": f"{first} (see {log})", "seconds": 0.0}


def _job(name: str, profile: str, cfg, points: list, options, out: Path, device: str, stamp: str, threads: int,
         log: Path) -> dict:
    """One experiment in a worker process, its output going to `log`."""
    limit_threads(threads)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    entry = _run(Plan(get_experiment(name), profile, cfg, points, options), out, device, stamp)
    if entry["error"]:
        entry["error"] += f" (see {log})"
    return entry


def _progress_line(plans: list[Plan], entries: dict[str, dict], name: str, elapsed: float) -> str:
    """`[3/10] vae 95 s (ok) · 6.1 min so far, about 12 min to go`, scaled by the pace so far."""
    spent_budget = sum(p.exp.budget_s for p in plans if p.exp.name in entries)
    left_budget = sum(p.exp.budget_s for p in plans if p.exp.name not in entries)
    pace = elapsed / max(spent_budget, 1e-9)
    entry = entries[name]
    status = "ok" if entry["report"] is not None else f"failed: {entry['error']}"
    return (f"[{len(entries)}/{len(plans)}] {name} {entry['seconds']:.0f} s ({status}) · "
            f"{elapsed / 60:.1f} min so far, about {left_budget * pace / 60:.0f} min to go")
