"""Report sections of `resnet-transfer`: ablation, skips cut at inference, feature hierarchy, transfer.

The page skeleton adds the headline table, the baseline's training curves and the configuration.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run, read_json

ANCHOR = "An ImageNet ResNet-152 with only its head trained reaches about 95.8% on CIFAR-10 in a public solution " \
         "of this assignment (the anchor for the full profile)."


def report_sections(rep: Report, run: Run) -> None:
    summary, cfg = run.read_summary(), run.read_config()["config"]
    analysis = read_json(run.path / "analysis.json")
    _baseline(rep, summary, cfg)
    _ablation(rep, run, summary, analysis["grad_norms"])
    _inference_cuts(rep, summary)
    _hierarchy(rep, summary, analysis["tsne"])
    _transfer(rep, run, summary)


def _baseline(rep: Report, summary: dict, cfg: dict) -> None:
    rep.section("Baseline on the source task")
    rows = [{"split": s, "accuracy": summary[f"{s}/accuracy"], "macro_f1": summary[f"{s}/macro_f1"]}
            for s in ("train", "val", "test")]
    rep.table(rows)
    model = cfg["model"]
    what = (f"ResNet-{6 * model['n'] + 2} (widths {model['widths']}, {model['init']} initialisation), from scratch"
            if model["arch"] == "small" else f"torchvision {model['arch']} from weights {model['weights']}")
    info = summary["data_info"]
    rep.text(f"{what}; source {info['source']} ({len(summary['classes'])} classes), target {info['target']}. "
             f"Best epoch {summary['best_epoch']} of {summary['epochs_run']}; {summary['time_per_epoch']:.1f} s per "
             f"epoch; {summary['params']:,} parameters. Split sizes: {info['sizes']}.")
    if model["arch"] != "small":
        rep.text(ANCHOR)


def _part_rows(run: Run, name: str) -> list[dict]:
    return [r for r in Run(run.path / "parts" / name).read_metrics() if "time/epoch" in r]


def _ablation(rep: Report, run: Run, summary: dict, grads: dict) -> None:
    rep.section("Residual ablation: trained without skip connections")
    abl = summary["ablation"]
    rep.table([{"skips removed": "none (intact)" if k == "intact" else k, **v} for k, v in abl.items()],
              highlight_best={"test_accuracy": "max"})
    if "ablation_gap" in summary:
        rep.text(f"Removing every skip costs {100 * summary['ablation_gap']:.1f} points of test accuracy after the "
                 "same training. grad_early_late is the mean gradient norm of the first third of the convolutions "
                 "over that of the last third, over training: below 1, the early layers learn more slowly.")
    epochs = {"intact": [r for r in run.read_metrics() if "time/epoch" in r]}
    epochs.update({k: _part_rows(run, f"ablation-{k.replace('+', '_')}") for k in abl if k != "intact"})
    rep.figure(plots.plot_overlaid_grid(epochs, ["train/loss", "val/accuracy"]), "ablation_curves")
    rep.figure(_grad_figure(grads), "grad_norms",
               "Gradient norm of each main-path weight (input to output), averaged over the first, middle and "
               "last third of training; log scale.")


def _grad_figure(grads: dict) -> Figure:
    fig, axes = plots._figure(len(grads), ncols=min(3, len(grads)))
    for ax, (name, rec) in zip(axes, grads.items()):
        g = np.asarray(rec["norms"], dtype=np.float64)  # (R, L)
        for label, part in zip(("early", "middle", "late"), np.array_split(np.arange(len(g)), 3)):
            if len(part):
                ax.plot(g[part].mean(0), marker="o", ms=3, label=label)
        ax.set_yscale("log")
        plots._style(ax, "intact" if name == "intact" else f"skips removed: {name}", "layer", "gradient norm")
        if len(g):
            ax.legend(frameon=False, fontsize=8)
    return fig


def _inference_cuts(rep: Report, summary: dict) -> None:
    rep.section("The trained intact model with skips cut at inference")
    rows = summary["inference_cuts"]
    rep.table(rows)
    rep.figure(plots.plot_bars({r["skips cut"]: r["test_accuracy"] for r in rows}, "Test accuracy, skips cut in",
                               "accuracy"), "inference_cuts")
    worst = max(rows[1:], key=lambda r: r["drop"])
    rep.text(f"Cutting the skips of {worst['skips cut']} costs the most: {100 * worst['drop']:.1f} points. The blocks "
             "were trained to add a residual to their input; without the input the signal they pass on changes.")


def _hierarchy(rep: Report, summary: dict, maps: dict) -> None:
    h = summary["hierarchy"]
    rep.section("Feature hierarchy: class structure stage by stage (source test set)")
    rep.table([{"level": lv, "dims": d, "linear probe accuracy": p, "probe train accuracy": pt, "silhouette": s}
               for lv, d, p, pt, s in zip(h["levels"], h["dims"], h["probe_accuracy"], h["probe_train_accuracy"],
                                          h["silhouette"])])
    rep.text("Linear probe: logistic regression on the features of the end of each stage (globally pooled), fitted "
             "on train examples and scored on the test set. Silhouette: of the test features grouped by class.")
    rep.figure(_tsne_figure(maps), "tsne", "t-SNE (scikit-learn) of each level's test features, one colour per class.")
    rep.figure(_cka_figure(np.asarray(h["cka"]), h["levels"]), "cka", "Linear CKA between levels (test features).")


def _tsne_figure(maps: dict) -> Figure:
    levels = list(maps["points"])
    fig, axes = plots._figure(len(levels), ncols=min(3, len(levels)), panel=(4.2, 3.8))
    labels, colors = np.asarray(maps["labels"]), colormaps["tab20"]
    for ax, level in zip(axes, levels):
        pts = np.asarray(maps["points"][level])
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=[colors(int(k) % 20) for k in labels])
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(level, fontsize=11, fontweight="bold")
    return fig


def _cka_figure(cka: np.ndarray, levels: list[str]) -> Figure:
    fig, (ax,) = plots._figure(panel=(5.0, 4.2))
    im = ax.imshow(cka, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(len(levels)), levels, rotation=45), ax.set_yticks(range(len(levels)), levels)
    for i in range(len(levels)):
        for j in range(len(levels)):
            ax.text(j, i, f"{cka[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if cka[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax)
    ax.set_title("linear CKA", fontsize=11, fontweight="bold")
    return fig


def _transfer(rep: Report, run: Run, summary: dict) -> None:
    rows = summary["transfer"]
    rep.section("Transfer to the target task")
    budgets = list(dict.fromkeys(r["labels_per_class"] for r in rows))
    table = {}
    for r in rows:
        table.setdefault(r["strategy"], {"strategy": r["strategy"]})[f"{r['labels_per_class']} / class"] = \
            r["test_accuracy"]
    rep.table(list(table.values()), highlight_best={f"{b} / class": "max" for b in budgets})
    rep.text(f"Test accuracy on the target task ({len(summary['target_classes'])} classes). probe: a linear head "
             "on the frozen source model's pooled last-stage features; last: the last stage and a new head "
             "fine-tuned, earlier stages frozen; all: everything fine-tuned, the backbone at a lower rate (parameter "
             "groups); scratch: the same network from a random initialisation.")
    by_strategy = {s: [r["test_accuracy"] for r in rows if r["strategy"] == s] for s in table}
    rep.figure(_labels_figure(by_strategy, budgets), "transfer_labels")
    curves = {f"{r['strategy']} ({r['labels_per_class']})": [{"epoch": i + 1, "val/accuracy": a} for i, a in
                                                                 enumerate(r["val_curve"])] for r in rows}
    rep.figure(plots.plot_overlaid(curves, "val/accuracy", title="Target validation accuracy per epoch"),
               "transfer_epochs")


def _labels_figure(by_strategy: dict[str, list[float]], budgets: list[str]) -> Figure:
    fig, (ax,) = plots._figure()
    for name, accs in by_strategy.items():
        ax.plot(range(len(accs)), accs, marker="o", label=name)
    ax.set_xticks(range(len(budgets)), budgets)
    plots._style(ax, "Target test accuracy vs labels per class", "labels per class", "accuracy")
    ax.legend(frameon=False)
    return fig
