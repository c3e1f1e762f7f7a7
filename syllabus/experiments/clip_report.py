"""Report sections of `clip`: zero-shot prompting, the held-out combination, the gap, the shift, Procrustes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run

# Published numbers printed beside ours.
ANCHOR_STL10 = 0.9713  # open_clip's zero-shot table: ViT-B-32 `openai` on STL-10
ANCHOR_GAP_COCO = 0.82  # Liang et al. 2022: centroid gap of CLIP on MSCOCO pairs


def _zero_shot(rep: Report, summary: dict) -> None:
    zs, classes = summary["zero_shot"], summary["classes"]
    rep.section("Zero-shot accuracy by prompting strategy")
    rows = [{"strategy": s, "accuracy": v["accuracy"]} for s, v in zs["strategies"].items()]
    rows.append({"strategy": "anchor: open_clip ViT-B-32 openai, STL-10 (published)", "accuracy": ANCHOR_STL10})
    rep.table(rows, highlight_best={"accuracy": "max"})
    rep.text(f"Chance is {1 / len(classes):.3f}. The ensemble is the mean of the normalised text embeddings of "
             f"its templates. The anchor is the published number of the full profile's model and data; "
             f"this run: {summary['model_kind']} model on {summary['data_info']['dataset']}.")
    per_class = [{"class": c, **{s: v["per_class"][c] for s, v in zs["strategies"].items()}} for c in classes]
    rep.text("Per-class accuracy of every strategy:")
    rep.table(per_class, floatfmt="{:.3f}")
    rep.figure(plots.plot_confusion(np.asarray(zs["confusion"]), classes), "confusion_best",
               f"Confusion matrix of the best strategy ({zs['best']}).")


def _holdout(rep: Report, summary: dict) -> None:
    rows = summary.get("holdout")
    if not rows:
        return
    rep.section(f"The held-out combination: {summary['data_info']['holdout']}")
    rep.table(rows, floatfmt="{:.3f}")
    rep.text("No training caption names this colour with this shape (its images were left out of training and "
             "validation). Shape uses the best strategy's prompts; colour ensembles 'a {colour} {shape}.' over "
             "shapes; colour and shape picks one of every colour-shape prompt. Chance: 1/12, 1/11, 1/132.")


def _scatter(views, method: str) -> Figure:
    a, b = views[f"{method}_image"], views[f"{method}_text"]
    labels = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    return plots.plot_embedding(np.concatenate([a, b]), labels, ["image", "text"],
                                title=f"{method.upper()} of normalised test embeddings")


def _gap(rep: Report, summary: dict, run: Run) -> None:
    rep.section("The modality gap")
    rep.table([{"measure": "centroid gap, test pairs", "ours": summary["gap"], "anchor": ANCHOR_GAP_COCO},
               {"measure": "centroid gap, fit (train) pairs", "ours": summary["gap_fit"]},
               {"measure": "accuracy of a linear image-vs-text classifier", "ours":
                summary["modality_classifier_accuracy"]}])
    rep.text("The gap is the distance between the centroids of the normalised image and text embeddings; the "
             "anchor is Liang et al. 2022 (CLIP on MSCOCO). The classifier is a logistic regression on held-out "
             "embeddings: 0.5 when the modalities overlap.")
    per_class = {c: g for c, g in summary["gap_per_class"].items() if g is not None}
    rep.figure(plots.plot_bars(per_class, "Gap per class", "centroid distance"), "gap_per_class")
    path = run.path / "views.npz"
    if path.exists():
        with np.load(path) as views:
            rep.figure(_scatter(views, "pca"), "gap_pca")
            rep.figure(_scatter(views, "tsne"), "gap_tsne")


def _shift_figure(rows: list[dict]) -> Figure:
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    lam = [r["lambda"] for r in rows]
    for ax, key in zip(axes, ("gap", "accuracy")):
        ax.plot(lam, [r[key] for r in rows], marker="o")
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_xlabel("shift lambda (1 = centroids meet)")
        ax.set_ylabel(key)
        ax.set_title(f"{key} vs shift")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _shift_and_alignment(rep: Report, summary: dict) -> None:
    rep.section("Shifting the modalities toward each other (Liang et al. 2022)")
    rep.text("Image embeddings move by -lambda/2 and text embeddings (captions and class prompts) by +lambda/2 "
             "of the centroid difference measured on the fit pairs, then are renormalised; negative lambda widens "
             "the gap.")
    rep.table(summary["shift"], floatfmt="{:.4f}")
    rep.figure(_shift_figure(summary["shift"]), "shift")
    rep.section("Orthogonal Procrustes alignment against the mean shift")
    rep.table(summary["alignment"], columns=["map", "fraction", "pairs", "gap", "pair_cosine", "accuracy"],
              highlight_best={"accuracy": "max", "pair_cosine": "max"})
    rep.text("Each map is fitted on a random fraction of the centred, normalised fit pairs (image, its text) and "
             "applied to the test images: x -> (x - mean_image) R + mean_text, R the orthogonal Procrustes "
             "rotation (the identity for the mean shift). Gap and pair cosine are against the test texts; "
             "accuracy is zero-shot with the best strategy's class embeddings.")


def report_sections(rep: Report, run: Run) -> None:
    summary = run.read_summary()
    _zero_shot(rep, summary)
    _holdout(rep, summary)
    _gap(rep, summary, run)
    _shift_and_alignment(rep, summary)
