"""`syllabus run all`: every experiment, one after another or several at once, then the index.

With `jobs` > 1 (the default on a CPU-only machine with two or more cores) experiments and the
points of their sweeps run as jobs in separate processes on `cpu_count // jobs` torch threads
each (`syllabus.run_jobs`): the small models of the quick profiles use one core about as well
as two, so two at once nearly halve the wall time. An experiment that reuses another's run
(gradcam after resnet-norms) starts once that one has ended and is handed its directory, as in
the sequential order. The terminal gets one line per experiment that ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from syllabus.config import leaves
from syllabus.errors import UsageError
from syllabus.experiments import all_experiments
from syllabus.options import PREFIXES as OPTION_PREFIXES
from syllabus.run_jobs import hand_over, run_parallel, run_plan
from syllabus.runner import Plan, plan
from syllabus.runs import check_out_dir, timestamp


def plan_all(profile: str, overrides: dict[str, str], seed: int | None) -> list[Plan]:
    """A plan per experiment; each `--set` key applies where an experiment has it."""
    plans, used = [], {k for k in overrides if k.startswith(OPTION_PREFIXES)}
    options = {k: overrides[k] for k in used}  # log.* and launcher.* apply to every run
    for exp in all_experiments():
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
            hand_over(p, entries)
            entries[p.exp.name] = run_plan(p, out, device, stamp)
            print(_progress_line(plans, entries, p.exp.name, time.perf_counter() - start))
    else:
        run_parallel(plans, out, device, stamp, jobs, entries, lambda name, spent: print(
            _progress_line(plans, entries, name, time.perf_counter() - start, spent)))
    ordered = [{"exp": p.exp, **entries[p.exp.name]} for p in plans]
    wall = time.perf_counter() - start if jobs > 1 else None
    return index_page(Path(out), ordered, plans[0].profile if plans else "", wall)


def _progress_line(plans: list[Plan], entries: dict[str, dict], name: str, elapsed: float,
                   spent_budget: float | None = None) -> str:
    """`[3/10] vae 95 s (ok) · 6.1 min so far, about 12 min to go`: the budget left, scaled by the
    pace so far. `spent_budget`: the budget of the jobs ended (sweep points included), when jobs
    run side by side; else that of the experiments ended."""
    if spent_budget is None:
        spent_budget = sum(p.exp.budget_s for p in plans if p.exp.name in entries)
    left_budget = sum(p.exp.budget_s for p in plans) - spent_budget
    pace = elapsed / max(spent_budget, 1e-9)
    entry = entries[name]
    status = "ok" if entry["report"] is not None else f"failed: {entry['error']}"
    return (f"[{len(entries)}/{len(plans)}] {name} {entry['seconds']:.0f} s ({status}) · "
            f"{elapsed / 60:.1f} min so far, about {left_budget * pace / 60:.0f} min to go")
