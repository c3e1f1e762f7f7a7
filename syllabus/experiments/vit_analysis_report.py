"""Report sections of `vit-analysis`: inference, attention maps and their localisation, patch
masking curves, CLS against mean-pooled probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from syllabus.explain.attention import smooth
from syllabus.explain.gradcam import overlay
from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run

ANALYSIS_FILE = "analysis.npz"
HOW_TEXT = {"zero": "replaced by black", "mean": "replaced by the mean colour", "drop": "tokens dropped"}
MAX_OVERLAY_ROWS = 8


def _arrays(run_dir: Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / ANALYSIS_FILE
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def _top5_figure(arrays: dict, classes: list[str], ncols: int = 8) -> Figure:
    """Each image under its true class and its top-5 classes with their probabilities."""
    n = len(arrays["images"])
    ncols = min(ncols, n)
    rows = -(-n // ncols)
    fig = Figure(figsize=(1.5 * ncols, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, label, top, prob in zip(axes, arrays["images"], arrays["labels"], arrays["top"],
                                           arrays["top_prob"]):
        ax.imshow(image)
        lines = [f"{classes[k][:11]} {p:.2f}" for k, p in zip(top, prob)]
        ax.set_title(f"true: {classes[label][:11]}\n" + "\n".join(lines), fontsize=6.5,
                     color="black" if top[0] == label else "firebrick")
    return fig


def _overlay_figure(arrays: dict, classes: list[str]) -> Figure:
    """Per image: the image (and object outline), rollout, last-layer mean, then each head."""
    images = arrays["images"][:MAX_OVERLAY_ROWS]
    size = images.shape[1:3]
    heads = arrays["heads"][:MAX_OVERLAY_ROWS]  # (G, h, gh, gw)
    maps = [smooth(torch.as_tensor(arrays["rollout"][:len(images)]), size).numpy(),
            smooth(torch.as_tensor(heads.mean(1)), size).numpy()]
    maps += [smooth(torch.as_tensor(heads[:, h]), size).numpy() for h in range(heads.shape[1])]
    names = ["rollout", "last layer"] + [f"head {h}" for h in range(heads.shape[1])]
    cols = 1 + len(maps)
    fig = Figure(figsize=(1.25 * cols, 1.3 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), cols, squeeze=False)
    for i, image in enumerate(images):
        axes[i, 0].imshow(image)
        if "masks" in arrays:
            axes[i, 0].contour(arrays["masks"][i], levels=[0.5], colors="white", linewidths=0.6)
        axes[i, 0].set_title("image" if i == 0 else "", fontsize=7)
        axes[i, 0].set_ylabel(classes[arrays["labels"][i]][:12], fontsize=7)
        for j, m in enumerate(maps):
            axes[i, j + 1].imshow(overlay(image, m[i]))
            if i == 0:
                axes[i, j + 1].set_title(names[j], fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _interval(cell: dict) -> str:
    return f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def _localisation_section(rep: Report, loc: dict) -> None:
    rep.section("Attention inside the object")
    rows = []
    for name, cell in loc.items():
        row = {"map": name.replace("_", " "), "mass in mask (95% CI)": _interval(cell["energy"]),
               "pointing game (95% CI)": _interval(cell["pointing"])}
        for b in ("uniform", "gaussian"):
            if f"vs_{b}" in cell:
                d, lo, hi = cell[f"vs_{b}"]
                row[f"minus {b}"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append(row)
    rep.table(rows)
    for name in ("rollout", "last_layer"):
        rep.text(_localisation_finding(name.replace("_", " "), loc[name]))
    rep.text("Mass in mask: the share of a map's attention that falls on the object's pixels (each patch's "
             "weight spread evenly over its pixels); pointing game: whether the most-attended patch lies on the "
             "object. Uniform is the image-blind flat map (its mass in the mask is the object's area); gaussian "
             "is a centred Gaussian (objects tend to sit in the middle). Differences come with Welch 95% bounds.")


def _localisation_finding(name: str, cell: dict) -> str:
    """One sentence per map that claims only what the 95% intervals support."""
    parts = []
    for b, text in (("uniform", "the uniform map"), ("gaussian", "the centred Gaussian")):
        d, lo, hi = cell[f"vs_{b}"]
        verdict = "more than" if lo > 0 else "less than" if hi < 0 else "not distinguishable from"
        parts.append(f"{verdict} {text} ({d:+.3f}, 95% [{lo:+.3f}, {hi:+.3f}])")
    return f"The {name} map puts {cell['energy']['mean']:.3f} of its mass on the object: " + "; ".join(parts) + "."


def _masking_finding(m: dict) -> str:
    """Accuracy kept at the largest random-masking ratio, per way of masking, and most vs least first."""
    i = len(m["ratios"]) - 1
    kept = ", ".join(f"{how} {np.mean([row[i] for row in c]):.3f}" for how, c in m["random"].items())
    base = np.mean([c[0][0] for c in m["random"].values()]) if m["ratios"][0] == 0 else float("nan")
    gaps = ", ".join(f"{how} {np.mean(np.subtract(r['least'], r['most'])):+.3f}" for how, r in m["ranked"].items())
    return (f"Unmasked accuracy on these images {base:.3f}; with {m['ratios'][i]:.0%} of the patches masked at "
            f"random: {kept}. Masking the least-attended patches first instead of the most-attended keeps on "
            f"average (over ratios) this much more accuracy: {gaps}. Anchor: ViTs keep about 60% ImageNet top-1 "
            "with 80% of the image randomly occluded (Naseer et al. 2021).")


def _masking_figure(m: dict) -> Figure:
    ratios = m["ratios"]
    hows = list(m["random"])
    fig = Figure(figsize=(4.6 * len(hows), 3.4), layout="constrained")
    axes = fig.subplots(1, len(hows), squeeze=False)[0]
    for ax, how in zip(axes, hows):
        curves = np.asarray(m["random"][how])  # (seeds, ratios)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(ratios, mean, "o-", label="random")
        ax.fill_between(ratios, mean - std, mean + std, alpha=0.25)
        for order, style in (("most", "s--"), ("least", "^--")):
            ax.plot(ratios, m["ranked"][how][order], style, label=f"{order}-attended first")
        ax.set_title(f"patches {HOW_TEXT.get(how, how)}", fontsize=10)
        ax.set_xlabel("share of patches masked")
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def _masking_section(rep: Report, m: dict) -> None:
    rep.section("Patch masking")
    rep.figure(_masking_figure(m), "masking_curves",
               "Random masking (mean and one standard deviation over seeds) against masking the patches with the "
               "highest (most) or lowest (least) rollout attention first.")
    rows = [{"ratio": r, **{how: float(np.mean([row[i] for row in c])) for how, c in m["random"].items()}}
            for i, r in enumerate(m["ratios"])]
    rep.table(rows)
    rep.text(_masking_finding(m))
    pat = m["patterns"]
    rep.figure(plots.plot_grouped_bars({p: {how: pat["accuracy"][how][p] for how in pat["accuracy"]}
                                        for p in pat["share"]}, "Systematic patterns", "test accuracy"),
               "masking_patterns")
    rep.table([{"pattern": p, "share masked": s, **{how: pat["accuracy"][how][p] for how in pat["accuracy"]}}
               for p, s in pat["share"].items()])


def _probe_section(rep: Report, probes: dict) -> None:
    rep.section("CLS token against mean pooling: linear probes per layer")
    rows = [{"layer": i, "CLS probe": probes["cls"][i], "mean-pooled probe": probes["mean"][i],
             "agreement": probes["agreement"][i], "both right": probes["both_right"][i]}
            for i in range(len(probes["cls"]))]
    rep.figure(plots.plot_curves(rows, ["CLS probe", "mean-pooled probe", "agreement"], x="layer",
                                 title="Linear probes per layer", ylabel="test accuracy / agreement"), "probes")
    rep.table(rows)
    best = {k: int(np.argmax(probes[k])) for k in ("cls", "mean")}
    rep.text(f"Best CLS probe: layer {best['cls']} ({probes['cls'][best['cls']]:.3f}); best mean-pooled probe: "
             f"layer {best['mean']} ({probes['mean'][best['mean']]:.3f}); at the last layer the two agree on "
             f"{probes['agreement'][-1]:.3f} of the test images.")
    rep.text("Layer 0 is the embedding (the CLS token there is the same learned vector for every image, so its "
             "probe can only guess the most frequent class); layer l is the output of block l. Agreement: the "
             "share of test images on which the two probes predict the same class.")


def sections(rep: Report, run: Run) -> None:
    summary, arrays = run.read_summary(), _arrays(run.path)
    classes = summary["classes"]
    rep.section("Inference")
    rep.text(f"Test accuracy {summary['test/accuracy']:.3f} over {len(classes)} classes (chance "
             f"{1 / len(classes):.3f}); {summary['params']:,} parameters.")
    rep.figure(plots.plot_confusion(np.asarray(summary["test"]["confusion"]), classes), "confusion")
    if arrays:
        rep.figure(_top5_figure(arrays, classes), "top5",
                   "Top-5 predictions with softmax probabilities (red: the top prediction is wrong).")
        rep.section("Attention maps")
        rep.figure(_overlay_figure(arrays, classes), "attention_overlays",
                   "Attention rollout (Abnar & Zuidema 2020: heads averaged, 0.5 A + 0.5 I per block), the last "
                   "block's CLS attention averaged over heads, and each head; the object outlined in white.")
    if "localisation" in summary:
        _localisation_section(rep, summary["localisation"])
    _masking_section(rep, summary["masking"])
    _probe_section(rep, summary["probes"])
