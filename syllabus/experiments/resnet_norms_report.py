"""Report sections of `resnet-norms`: one run, and the comparison of a sweep.

The page skeleton (`syllabus.report.pages`) adds the headline table, the training curves and
the configuration; these functions add what is this experiment's own.
"""

from __future__ import annotations

import numpy as np

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run

METRICS = ("accuracy", "micro_f1", "macro_f1")
SPLITS = ("train", "val", "test")


def _rho_by_layer(bin_rho: dict[str, list[float]]) -> dict[str, list[float]]:
    """Mean, min and max of rho over channels, per BIN layer (in network order)."""
    values = [np.asarray(v) for v in bin_rho.values()]
    return {"mean": [float(v.mean()) for v in values], "min": [float(v.min()) for v in values],
            "max": [float(v.max()) for v in values]}


def report_sections(rep: Report, run: Run) -> None:
    summary, cfg = run.read_summary(), run.read_config()["config"]
    rep.section("Accuracy and F1 of the best checkpoint")
    rep.table([{"split": s, **{k: summary["splits"][s][k] for k in METRICS}} for s in SPLITS],
              columns=["split", *METRICS])
    rep.text(f"ResNet-{summary['depth']} with {summary['norm']} normalisation. Best epoch {summary['best_epoch']} "
             f"of {summary['epochs_run']} (by {cfg['train']['monitor']})"
             f"{', stopped early' if summary['stopped_early'] else ''}; {summary['time_per_epoch']:.1f} s per "
             f"training epoch; {summary['params']:,} parameters. Every split is scored with the evaluation "
             "transform (no augmentation).")
    rep.section("Confusion matrix (test)")
    cm = np.asarray(summary["splits"]["test"]["confusion"])
    rep.figure(plots.plot_confusion(cm, summary["classes"]), "confusion_test")
    if summary.get("bin_rho"):
        rep.section("BIN: learned rho per layer")
        rep.text("rho = 1 is pure batch normalisation, rho = 0 pure instance normalisation.")
        rep.figure(plots.plot_lines_per_group(_rho_by_layer(summary["bin_rho"]), title="rho per BIN layer",
                                              xlabel="layer (input to output)", ylabel="rho"), "bin_rho")


def best_lr_rows(points: list[Point]) -> list[dict]:
    """Per normalisation, the point with the best validation accuracy over its learning rates."""
    best: dict[str, Point] = {}
    for p in points:
        norm = p.summary["norm"]
        if norm not in best or p.summary["val/accuracy"] > best[norm].summary["val/accuracy"]:
            best[norm] = p
    return [{"norm": n, "best lr (on val)": p.summary.get("lr"), "val/accuracy": p.summary["val/accuracy"],
             "test/accuracy": p.summary["test/accuracy"], "test/macro_f1": p.summary["test/macro_f1"]}
            for n, p in best.items()]


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    rows = [{"run": p.label, **{f"{sp}/{m}": p.summary[f"{sp}/{m}"] for sp in ("test", "val") for m in METRICS}}
            for p in points]
    rep.section("Test and validation metrics (best checkpoint of each run)")
    rep.table(rows, highlight_best={k: "max" for k in rows[0] if "/" in k})
    ranked = sorted(rows, key=lambda r: -r["test/accuracy"])
    rep.text("Ranked by test accuracy: " + ", ".join(f"{r['run']} ({r['test/accuracy']:.3f})" for r in ranked) + ".")
    accs = {p.label: {sp: p.summary[f"{sp}/accuracy"] for sp in SPLITS} for p in points}
    rep.figure(plots.plot_grouped_bars(accs, title="Accuracy per split", ylabel="accuracy"), "accuracy_bars")
    rep.figure(plots.plot_bars({p.label: p.summary["time_per_epoch"] for p in points},
                               title="Time per training epoch", ylabel="seconds"), "time_per_epoch")
    lrs = {p.summary.get("lr") for p in points}
    if len(lrs) > 1:
        rep.section("Each normalisation at its best learning rate")
        rep.text("The table above answers 'which normalisation wins at one shared setting'. This one answers "
                 "'which wins when each gets its own learning rate': per normalisation, the learning rate "
                 "of the grid with the best validation accuracy (the test split plays no part in the choice).")
        rep.table(best_lr_rows(points), highlight_best={"val/accuracy": "max", "test/accuracy": "max"})
    _bin_section(rep, points)
    return {"best": ranked[0]["run"]}


def _bin_section(rep: Report, points: list[Point]) -> None:
    groups = {p.label: _rho_by_layer(p.summary["bin_rho"])["mean"] for p in points if p.summary.get("bin_rho")}
    if groups:
        rep.section("BIN: learned rho per layer (mean over channels)")
        rep.text("rho = 1 is pure batch normalisation, rho = 0 pure instance normalisation.")
        rep.figure(plots.plot_lines_per_group(groups, title="rho per BIN layer", xlabel="layer (input to output)",
                                              ylabel="mean rho"), "bin_rho")
