"""Report of `gradcam`: localisation numbers, what they support, the grids, a sweep side by side.

Everything is read back from the run directory (`summary.json`, `explanations.npz`,
`config.json`), so `syllabus report <run>` re-renders it without the model.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import numpy as np

from syllabus.explain.gradcam import heatmap_rgb, overlay
from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run

SCORES = ("energy", "pointing")
METHOD_NAMES = {"gradcam": "Grad-CAM", "uniform": "uniform", "gaussian": "centred Gaussian"}
MIN_GROUP = 5  # classes with fewer correct images are left out of the best/worst sentence


def _wrap(text: str, width: int = 22) -> str:
    return textwrap.fill(text, width)


class Picks:
    """Positions in `explanations.npz` of each class's correct and wrong images."""

    def __init__(self, picks: dict[str, dict[str, list[int]]]):
        self.positions: dict[str, dict[str, list[int]]] = {}
        start = 0
        for name, p in picks.items():
            self.positions[name] = {}
            for kind in ("correct", "wrong"):
                self.positions[name][kind] = list(range(start, start + len(p[kind])))
                start += len(p[kind])


def _strip(arrays: dict, pos: int, classes: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Image, heat map and overlay of one chosen image; its true and predicted labels."""
    image = arrays["images"][pos] / 255.0  # (H, W, 3)
    cam = arrays["maps"][pos] / 255.0  # (H, W)
    pred, conf = classes[int(arrays["pred"][pos])], float(arrays["conf"][pos])
    return ([image, heatmap_rgb(cam), overlay(image, cam)],
            [_wrap(f"true: {classes[int(arrays['true'][pos])]}"), "Grad-CAM", _wrap(f"pred: {pred} ({conf:.2f})")])


def class_grid(arrays: dict, positions: dict[str, list[int]], classes: list[str]):
    """Two columns of strips (image, map, overlay): correctly and wrongly classified images."""
    strips, labels, titles = [], [], []
    for r in range(max(len(positions["correct"]), len(positions["wrong"]))):
        for kind in ("correct", "wrong"):
            ps = positions[kind]
            strip, label = _strip(arrays, ps[r], classes) if r < len(ps) else (None, [])
            strips.append(strip)
            labels.append(label)
            titles.append(f"{kind} #{int(arrays['indices'][ps[r]])}" if r < len(ps) else "")
    return plots.image_strips(strips, labels, titles, ncols=2)


def variants_grid(arrays: dict, rows: list[int], names: list[str], classes: list[str]):
    """One strip per image: the image, then each variant's overlay with its prediction."""
    strips, labels = [], []
    for pos in rows:
        image = arrays["images"][pos] / 255.0
        strips.append([image] + [overlay(image, arrays[f"variant{i}_maps"][pos] / 255.0) for i in range(len(names))])
        labels.append([_wrap(f"true: {classes[int(arrays['true'][pos])]}", 16)] + [
            _wrap(f"{name}: {classes[int(arrays[f'variant{i}_pred'][pos])]} "
                  f"({float(arrays[f'variant{i}_conf'][pos]):.2f})", 16) for i, name in enumerate(names)])
    return plots.image_strips(strips, labels, ncols=2 if len(names) <= 3 else 1)


# --- observations: sentences only where the numbers support them ---------------------------------------


def _interval(t: dict) -> str:
    return f"{t['difference']:+.3f} (95% interval {t['low']:+.3f} to {t['high']:+.3f})"


def _verdict(t: dict, better: str, worse: str, same: str) -> str:
    if any(math.isnan(t[k]) for k in ("low", "high")):
        return "too few images to tell"
    if t["low"] > 0:
        return better
    return worse if t["high"] < 0 else same


def observations(summary: dict) -> list[str]:
    """What the localisation numbers support, one sentence each."""
    tests = {(t["comparison"], t["score"]): t for t in summary["localisation_tests"]}
    rows = {r["prediction"]: r for r in summary["localisation"] if r["class"] == "all"}
    out = []
    for m in ("uniform", "gaussian"):
        parts = [f"{s} {rows['correct'][f'gradcam {s}']:.3f} vs {rows['correct'][f'{m} {s}']:.3f}, "
                 f"difference {_interval(tests[(f'gradcam - {m} (correct)', s)])}: "
                 + _verdict(tests[(f"gradcam - {m} (correct)", s)], "above", "below", "no clear difference")
                 for s in SCORES]
        out.append(f"On correctly classified images, Grad-CAM against the {METHOD_NAMES[m]} baseline: "
                   + "; ".join(parts) + ".")
    n_ok, n_bad = rows["correct"]["n"], rows["wrong"]["n"]
    parts = [f"{s} {rows['correct'][f'gradcam {s}']:.3f} vs {rows['wrong'][f'gradcam {s}']:.3f}, difference "
             f"{_interval(tests[('correct - wrong', s)])}: " + _verdict(
                 tests[("correct - wrong", s)], "correct predictions localise better",
                 "wrong predictions localise better", "no clear difference") for s in SCORES]
    out.append(f"Correct ({n_ok} images) against wrong ({n_bad}) predictions: " + "; ".join(parts) + ".")
    size = tests[("correct - wrong", "energy / area")]
    out.append(f"The objects of wrongly classified images cover {rows['wrong']['uniform energy']:.3f} of the image "
               f"on average, those of correct ones {rows['correct']['uniform energy']:.3f}. Energy in mask divided "
               f"by that area share, correct minus wrong: {_interval(size)}: " + _verdict(
                   size, "correct predictions still localise better", "wrong predictions localise better",
                   "no clear difference once object size is taken out") + ".")
    out.append(_class_sentence(summary["localisation"]))
    if summary.get("empty_maps"):
        out.append(f"{summary['empty_maps']} map(s) were zero everywhere (no positive evidence for the target "
                   "class at these layers); they are scored as flat maps.")
    return [s for s in out if s]


def _class_sentence(rows: list[dict]) -> str:
    per_class = [r for r in rows if r["class"] != "all" and r["prediction"] == "correct" and r["n"] >= MIN_GROUP]
    if len(per_class) < 2:
        return ""
    ranked = sorted(per_class, key=lambda r: r["gradcam energy"] / max(r["uniform energy"], 1e-9))
    fmt = lambda r: (f"{r['class']} ({r['gradcam energy']:.3f}, {r['gradcam energy'] / r['uniform energy']:.2f}x "
                     f"its area share; pointing {r['gradcam pointing']:.2f})")
    k = min(3, len(ranked) // 2)
    out = (f"Per class (correct images, classes with at least {MIN_GROUP}), energy in mask relative to the "
           f"object's area share is lowest for {', '.join(fmt(r) for r in ranked[:k])} and highest for "
           f"{', '.join(fmt(r) for r in ranked[::-1][:k])}.")
    for m in ("uniform", "gaussian"):
        for score in SCORES:
            below = [r["class"] for r in per_class if r[f"gradcam {score}"] <= r[f"{m} {score}"]]
            if below:
                out += f" Grad-CAM's {score} is no higher than the {METHOD_NAMES[m]} map's for: {', '.join(below)}."
    return out


def variant_observations(variants: list[dict], best: str) -> list[str]:
    """Each variant against the best one on the same images, and the two rankings."""
    if "vs_best" not in variants[0]:
        return []
    out = []
    for v in variants:
        if v["variant"] == best:
            continue
        parts = []
        for score in SCORES:
            diff, low, high = v["vs_best"][score]
            t = {"difference": diff, "low": low, "high": high}
            parts.append(f"{score} {_interval(t)}: " + _verdict(t, "better", "worse", "no clear difference"))
        out.append(f"{v['variant']} against {best} on the same validation images: "
                   + "; ".join(parts) + ".")
    by_loc = sorted(variants, key=lambda v: -v["loc/all/energy"])
    by_acc = sorted(variants, key=lambda v: -v["val/accuracy"])
    same = [v["variant"] for v in by_loc] == [v["variant"] for v in by_acc]
    out.append("Ranked by energy in mask (all validation images): " + ", ".join(
        f"{v['variant']} ({v['loc/all/energy']:.3f})" for v in by_loc) + "; by validation accuracy: "
        + ", ".join(f"{v['variant']} ({v['val/accuracy']:.3f})" for v in by_acc)
        + (". The two rankings agree." if same else ". The rankings differ: the more accurate variant does not "
           "always localise better."))
    return out


VARIANT_COLUMNS = {"variant": "variant", "val/accuracy": "val accuracy", "loc/all/energy": "energy (all)",
                   "loc/all/pointing": "pointing (all)", "loc/correct/energy": "energy (correct)",
                   "loc/correct/pointing": "pointing (correct)", "loc/wrong/energy": "energy (wrong)",
                   "loc/wrong/pointing": "pointing (wrong)", "empty_maps": "empty maps"}


# --- the page -----------------------------------------------------------------------------------


def _localisation_section(rep: Report, summary: dict) -> None:
    rows = summary["localisation"]
    cols = ["prediction", "n"] + [f"{m} {s}" for s in SCORES for m in ("gradcam", "uniform", "gaussian")]
    rep.section("Localisation (object masks known)")
    rep.text("Energy in mask: the share of the map's mass on the object. Pointing game: whether the map's "
             "maximum lies on the object (ties share the point). Baselines ignore the image: a uniform map "
             "(both scores equal the object's area share) and a Gaussian centred in the image. "
             f"Maps explain the {summary['target']} class at {', '.join(summary['layers'])}.")
    rep.table([r for r in rows if r["class"] == "all"], columns=cols, floatfmt="{:.3f}")
    rep.section("Observations")
    for sentence in observations(summary):
        rep.text(sentence)
    rep.table(summary["localisation_tests"], floatfmt="{:+.3f}")
    correct = [r for r in rows if r["class"] != "all" and r["prediction"] == "correct"]
    rep.figure(plots.plot_grouped_bars({r["class"]: {METHOD_NAMES[m]: r[f"{m} energy"] for m in METHOD_NAMES}
                                        for r in correct}, title="Energy in mask per class (correct images)",
                                       ylabel="share of the map's mass"), "localisation")
    rep.section("Localisation per class")
    rep.table([r for r in rows if r["class"] != "all" and r["n"]], columns=["class", *cols], floatfmt="{:.3f}")


def _grids_section(rep: Report, summary: dict, arrays: dict) -> None:
    rep.section("Correct and wrong predictions per class")
    k = summary["per_class"]
    rep.text(f"Per class, up to {k} correctly (left) and {k} wrongly (right) classified validation images, "
             "chosen at random (#: index in the validation split): image, Grad-CAM heat map, overlay; the "
             "predicted class with its softmax confidence.")
    for line in summary["shortfalls"]:
        rep.text(line)
    positions = Picks(summary["picks"]).positions
    for i, name in enumerate(summary["chosen_classes"]):
        if positions[name]["correct"] or positions[name]["wrong"]:
            rep.figure(class_grid(arrays, positions[name], summary["classes"]), f"grid_{i:02d}", caption=name)


def _variants_section(rep: Report, summary: dict, arrays: dict, per_class: int) -> None:
    variants = summary["variants"]
    rep.section("Normalisations side by side")
    rows = [{name: v[key] for key, name in VARIANT_COLUMNS.items() if key in v} for v in variants]
    rep.table(rows, floatfmt="{:.3f}", highlight_best={n: "max" for n in list(VARIANT_COLUMNS.values())[1:6]})
    if "vs_best" in variants[0]:
        rep.text("Each variant explains the same validation images; \"all\" scores every one of "
                 "them, so those columns compare the normalisations on equal terms (the correct and wrong groups "
                 "differ between variants).")
    for sentence in variant_observations(variants, summary["variant"]):
        rep.text(sentence)
    if summary.get("variants_skipped"):
        rep.text("Left out (trained on other data settings, so not the same images): "
                 + ", ".join(summary["variants_skipped"]) + ".")
    positions = Picks(summary["picks"]).positions
    images = [p for name in summary["chosen_classes"] for p in positions[name]["correct"][:per_class]]
    if images:
        labels = [v["variant"] for v in variants]
        rep.figure(variants_grid(arrays, images, labels, summary["classes"]), "variants",
                   caption="The same validation images (correct for the best variant), each variant's overlay "
                           "and prediction.")


def report_sections(rep: Report, run: Run) -> None:
    summary, saved = run.read_summary(), run.read_config()
    with np.load(run.path / "explanations.npz") as f:
        arrays = {k: f[k] for k in f.files}
    rep.section("The classifier")
    variant = f", variant {summary['variant']}" if summary["variant"] else ""
    rep.text(f"{summary['explained_run']} ({summary['explained_from']}{variant}); validation accuracy "
             f"{summary['val/accuracy']:.3f}. Layers: {', '.join(summary['layers'])}; target class: "
             f"{summary['target']}.")
    rep.link(os.path.relpath(Path(summary["explained_run"]) / "report.html", run.path), "its report")
    if summary["has_masks"]:
        _localisation_section(rep, summary)
    else:
        rep.text("This dataset has no object masks, so localisation is shown, not scored.")
    _grids_section(rep, summary, arrays)
    if summary.get("variants"):
        _variants_section(rep, summary, arrays, saved["config"]["explain"]["compare_per_class"])
