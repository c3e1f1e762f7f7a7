"""The page skeletons every experiment's reports share: a single run, a sweep, the `run all` index.

An experiment contributes only its own sections (`Experiment.sections`, `sweep_sections`);
the skeleton adds the title, the headline numbers, the training curves read from
metrics.jsonl, the links between pages and the configuration.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.plots import is_number
from syllabus.runs import Run, read_json, write_json

WIDE = 7  # tables with more columns than this are shown transposed


@dataclass
class Point:
    """One point of a sweep: its label, run directory and summary."""

    label: str
    path: Path
    summary: dict

    @property
    def run(self) -> Run:
        return Run(self.path)


def headline_values(keys: list[str], summary: dict) -> dict[str, Any]:
    return {k: summary[k] for k in keys if k in summary}


def fit_table(rep: Report, rows: list[dict], first: str, **kwargs) -> Report:
    """A table, transposed (one column per row) when it would be wider than the page."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if len(columns) <= WIDE or len(rows) > WIDE:
        return rep.table(rows, **kwargs)
    flipped = [{"": c, **{str(r.get(first, i)): r.get(c) for i, r in enumerate(rows)}} for c in columns if c != first]
    return rep.table(flipped)


def _epoch_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "step" not in r]


def _curve_metrics(epochs: list[dict]) -> list[str]:
    """Metric names logged for train or val, e.g. ["loss", "accuracy"], loss first."""
    names = dict.fromkeys(k.split("/", 1)[1] for r in epochs for k in r if k.startswith(("train/", "val/")))
    return sorted(names, key=lambda n: (n != "loss", list(names).index(n)))[:8]


def curves_section(rep: Report, run: Run) -> None:
    rows = run.read_metrics()
    epochs = _epoch_rows(rows)
    if not epochs:
        return
    rep.section("Training curves")
    metrics = _curve_metrics(epochs)
    if metrics:
        rep.figure(plots.plot_metric_grid(epochs, metrics, splits=("train", "val")), "curves")
    steps = [r for r in rows if "step" in r]
    keys = [k for k in dict.fromkeys(k for r in steps for k in r) if k.startswith("train/") and "loss" in k]
    if keys:
        rep.figure(plots.plot_curves(steps, keys[:4], x="step", title="Training loss per logged step"), "step_loss")


def single_page(exp, run: Run) -> Path:
    """The report of one run: headline, curves, the experiment's sections, configuration."""
    saved, summary = run.read_config(), run.read_summary()
    rep = Report(f"{exp.name}: {exp.title}", f"profile {saved.get('profile', '?')} · {run.path}",
                 plots_dir=run.plots_dir)
    head = headline_values(exp.headline, summary)
    if head:
        rep.section("Headline")
        rep.table([{"measure": k, "value": v} for k, v in head.items()])
    curves_section(rep, run)
    exp.sections(rep, run)
    rep.section("Configuration")
    rep.link("metrics.jsonl", "metrics.jsonl (every logged record)")
    rep.details("config.json (the resolved configuration of this run)", json.dumps(saved, indent=2))
    return rep.write(run.path / "report.html")


def sweep_page(exp, points: list[tuple[str, Path]], out: Path, unfinished: list[dict] = ()) -> Path:
    """The comparison of a sweep's points: headline per point, overlaid curves, the experiment's sections.

    unfinished: sweep.json entries of points still pending or failed (listed, with their error).
    """
    out = Path(out)
    pts = [Point(label, Path(d), read_json(Path(d) / "summary.json")) for label, d in points]
    rep = Report(f"{exp.name}: comparison", f"{len(pts)} runs · {out}", plots_dir=out / "plots")
    if unfinished:
        rep.section("Points not finished")
        rep.table([{"point": e["label"], "status": e["status"], "job": e.get("job_id", "")} for e in unfinished])
        for e in unfinished:
            if e.get("error"):
                rep.details(f"{e['label']}: the end of its log", e["error"])
    if not pts:
        write_json(out / "summary.json", {"points": []})
        return rep.write(out / "report.html")
    rows = [{"run": p.label, **headline_values(exp.headline, p.summary)} for p in pts]
    rep.section("Headline per run")
    fit_table(rep, rows, "run")
    for p in pts:
        rep.link(os.path.relpath(p.path / "report.html", out), f"report of {p.label}")
    curves = {p.label: _epoch_rows(p.run.read_metrics()) for p in pts}
    keys = [k for k in ("val/loss", "train/loss") if any(k in r for rows_ in curves.values() for r in rows_)]
    monitors = {read_json(p.path / "config.json")["config"].get("train", {}).get("monitor") for p in pts}
    keys = [k for k in monitors if k and k not in keys] + keys
    if any(curves.values()) and keys:
        rep.section("Curves")
        rep.figure(plots.plot_overlaid_grid(curves, keys[:4]), "curves")
    extra = exp.sweep_sections(rep, pts) if exp.sweep_sections is not None else None
    write_json(out / "summary.json", {"points": rows, **(extra or {})})
    rep.section("Configuration")
    rep.details("sweep.json", json.dumps(read_json(out / "sweep.json"), indent=2))
    return rep.write(out / "report.html")


def _card_numbers(exp, report_dir: Path) -> list[dict]:
    """Headline rows of a run (one row) or of a sweep (one row per point)."""
    summary = read_json(report_dir / "summary.json")
    if "points" in summary:
        return summary["points"]
    return [headline_values(exp.headline, summary)]


def _key_png(exp, report_dir: Path) -> Path | None:
    if not exp.key_figure:
        return None
    for candidate in (report_dir / "plots", *sorted(report_dir.parent.glob(report_dir.name.removesuffix("-sweep")
                                                                             + "-*/plots"))):
        png = candidate / f"{exp.key_figure}.png"
        if png.is_file():
            return png
    return None


def index_page(out: Path, entries: list[dict], profile: str, wall: float | None = None) -> Path:
    """One card per experiment: title, status, time, key figure, headline numbers, link.

    entries: {"exp", "report" (Path or None), "seconds", "error"} per experiment, in run order
    (a sweep's seconds: the sum of its points'); wall: the whole run's seconds, when jobs overlapped.
    """
    out = Path(out)
    total = sum(e["seconds"] for e in entries)
    took = f"{total / 60:.1f} min in all"
    if wall is not None:
        took = f"{wall / 60:.1f} min in all ({total / 60:.1f} min of jobs side by side)"
    rep = Report("syllabus: all experiments", f"profile {profile} · {len(entries)} experiments · {took}")
    for e in entries:
        exp, path = e["exp"], e["report"]
        card = rep.card(exp.name, exp.title, f"{e['seconds']:.0f} s")
        if path is None:
            card.text(f"failed: {e['error']}")
            continue
        png = _key_png(exp, path.parent)
        if png is not None:
            card.image(png)
        rows = _card_numbers(exp, path.parent)
        if rows and any(is_number(v) for r in rows for v in r.values()):
            fit_table(card, rows, "run", floatfmt="{:.3g}")
        card.link(os.path.relpath(path, out), "open the report")
    return rep.write(out / "index.html")
