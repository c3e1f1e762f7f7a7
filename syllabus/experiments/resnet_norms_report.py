"""Reports of `resnet-norms`: one run, and the side-by-side comparison of a sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run, read_json, write_json

METRICS = ("loss", "accuracy", "micro_f1", "macro_f1")
SPLITS = ("train", "val", "test")


def _epochs(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "step" not in r]


def _rho_by_layer(bin_rho: dict[str, list[float]]) -> dict[str, list[float]]:
    """Mean, min and max of rho over channels, per BIN layer (in network order)."""
    values = [np.asarray(v) for v in bin_rho.values()]
    return {"mean": [float(v.mean()) for v in values], "min": [float(v.min()) for v in values],
            "max": [float(v.max()) for v in values]}


def single_report(run: Run) -> Path:
    saved, summary, rows = run.read_config(), run.read_summary(), run.read_metrics()
    cfg = saved["config"]
    title = f"resnet-norms: {cfg['model']['norm']}, ResNet-{summary['depth']}"
    rep = Report(title, f"profile {saved['profile']} · data {cfg['data']['name']} "
                        f"{cfg['data']['image_size']}px · {run.path}")
    rep.plots_dir = run.plots_dir
    rep.section("Accuracy and F1 of the best checkpoint")
    rep.table([{"split": s, **{k: summary["splits"][s][k] for k in METRICS[1:]}} for s in SPLITS],
              columns=["split", *METRICS[1:]])
    rep.text(f"Best epoch {summary['best_epoch']} of {summary['epochs_run']} (by {cfg['train']['monitor']})"
             f"{', stopped early' if summary['stopped_early'] else ''}; "
             f"{summary['time_per_epoch']:.1f} s per training epoch; {summary['params']:,} parameters.")
    rep.section("Training curves")
    epochs = _epochs(rows)
    rep.figure(plots.plot_metric_grid(epochs, list(METRICS), splits=("train", "val")), "curves")
    steps = [r for r in rows if "step" in r]
    if steps:
        rep.figure(plots.plot_curves(steps, ["train/step_loss"], x="step", title="Training loss per step",
                                     ylabel="cross-entropy"), "step_loss")
    rep.figure(plots.plot_curves(epochs, ["time/epoch"], title="Time per epoch", ylabel="seconds"), "time")
    rep.section("Confusion matrix (test)")
    cm = np.asarray(summary["splits"]["test"]["confusion"])
    rep.figure(plots.plot_confusion(cm, summary["classes"]), "confusion_test")
    if summary.get("bin_rho"):
        rep.section("BIN: learned rho per layer")
        rep.text("rho = 1 is pure batch normalisation, rho = 0 pure instance normalisation.")
        rep.figure(plots.plot_lines_per_group(_rho_by_layer(summary["bin_rho"]), title="rho per BIN layer",
                                              xlabel="layer (input to output)", ylabel="rho"), "bin_rho")
    rep.section("Configuration")
    rep.details("config.json", json.dumps(saved, indent=2))
    return rep.write(run.path / "report.html")


def _point_row(label: str, run_dir: Path) -> dict:
    s = read_json(run_dir / "summary.json")
    return {"run": label, **{f"{sp}/{m}": s[f"{sp}/{m}"] for sp in ("test", "val") for m in METRICS[1:]},
            "best epoch": s["best_epoch"], "s/epoch": s["time_per_epoch"]}


def sweep_report(points: list[tuple[str, Path]], out: Path) -> Path:
    rows = [_point_row(label, d) for label, d in points]
    curves = {label: _epochs(Run(d).read_metrics()) for label, d in points}
    rep = Report("resnet-norms: comparison", f"{len(points)} runs · {out}")
    rep.plots_dir = Path(out) / "plots"
    rep.section("Test and validation metrics (best checkpoint of each run)")
    best = {k: "max" for k in rows[0] if "/" in k}
    rep.table(rows, highlight_best={**best, "s/epoch": "min"})
    ranked = sorted(rows, key=lambda r: -r["test/accuracy"])
    rep.text("Ranked by test accuracy: " + ", ".join(f"{r['run']} ({r['test/accuracy']:.3f})" for r in ranked) + ".")
    for label, d in points:
        rep.link(os.path.relpath(d / "report.html", out), f"report of {label}")
    rep.section("Curves")
    keys = ["val/accuracy", "val/loss", "train/loss", "val/macro_f1", "train/accuracy", "val/micro_f1"]
    rep.figure(plots.plot_overlaid_grid(curves, keys), "curves")
    accs = {r["run"]: {sp: read_json(d / "summary.json")[f"{sp}/accuracy"] for sp in SPLITS}
            for r, (_, d) in zip(rows, points)}
    rep.figure(plots.plot_grouped_bars(accs, title="Accuracy per split", ylabel="accuracy"), "accuracy_bars")
    rep.figure(plots.plot_bars({r["run"]: r["s/epoch"] for r in rows}, title="Time per training epoch",
                               ylabel="seconds"), "time_per_epoch")
    _bin_section(rep, points)
    summary = {"points": rows, "best": ranked[0]["run"]}
    summary.update({k: v for k, v in ranked[0].items() if "/" in k})
    write_json(Path(out) / "summary.json", summary)
    return rep.write(Path(out) / "report.html")


def _bin_section(rep: Report, points: list[tuple[str, Path]]) -> None:
    groups = {}
    for label, d in points:
        rho = read_json(d / "summary.json").get("bin_rho")
        if rho:
            groups[label] = _rho_by_layer(rho)["mean"]
    if groups:
        rep.section("BIN: learned rho per layer (mean over channels)")
        rep.text("rho = 1 is pure batch normalisation, rho = 0 pure instance normalisation.")
        rep.figure(plots.plot_lines_per_group(groups, title="rho per BIN layer", xlabel="layer (input to output)",
                                              ylabel="mean rho"), "bin_rho")
