"""Report sections of `slot-attention`: one run, and the comparison of a sweep.

The page skeleton adds the headline table, the train and val reconstruction loss (and the
per-epoch ARI / FG-ARI / mIoU) from metrics.jsonl, and the configuration; these add the
segmentation against the baselines and the published anchors, reconstructions with each
slot's mask and content, the attention of every iteration, and compositional generation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run

PICTURES = "pictures.npz"
SCORES = ("ari", "fg_ari", "miou")
_PALETTE = np.array([(0.12, 0.12, 0.12), (0.9, 0.1, 0.1), (0.1, 0.6, 0.9), (0.95, 0.75, 0.1), (0.2, 0.8, 0.2),
                     (0.75, 0.3, 0.9), (1.0, 0.5, 0.0), (0.0, 0.85, 0.75), (0.95, 0.45, 0.7), (0.55, 0.35, 0.15),
                     (0.6, 0.6, 0.6), (0.35, 0.35, 0.9)])


def _pictures(run: Run) -> dict[str, np.ndarray]:
    path = Path(run.path) / PICTURES
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k].astype(np.float32) if f[k].dtype == np.float16 else f[k] for k in f.files}


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -3, -1)  # (..., 3, H, W) -> (..., H, W, 3)


def colour_ids(ids: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) -> (H, W, 3), one fixed colour per id."""
    return _PALETTE[ids.astype(np.int64) % len(_PALETTE)]


def colour_weights(weights: np.ndarray) -> np.ndarray:
    """Per-slot weights (K, H, W) summing to 1 over K -> the mix of the slots' colours (H, W, 3)."""
    colours = _PALETTE[1 + np.arange(len(weights)) % (len(_PALETTE) - 1)]  # (K, 3), as colour_ids(k + 1)
    return np.einsum("khw,kc->hwc", weights, colours)


def _upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(..., h, w) -> (..., size, size) by repetition (attention cells shown as blocks)."""
    r = size // maps.shape[-1]
    return maps.repeat(r, -2).repeat(r, -1)


def _segmentation_section(rep: Report, summary: dict) -> None:
    rep.section("Object discovery against learning-free baselines")
    rows = summary["baselines"]
    rep.table([{k: r[k] for k in ("method", *SCORES)} for r in rows], highlight_best={s: "max" for s in SCORES})
    n = summary["split_info"]["sizes"]["val"]
    rep.text(f"Scored on the same {summary.get('n_baseline', 'first')} val images; k-means with K = "
             f"{summary['num_slots']} clusters per image. Over the whole val split ({n} images) slot attention "
             f"reaches ARI {summary['val/ari']:.3f}, FG-ARI {summary['val/fg_ari']:.3f}, mIoU {summary['val/miou']:.3f}"
             f" (test: FG-ARI {summary['test/fg_ari']:.3f}). FG-ARI leaves out background pixels; mIoU matches "
             "segments by the Hungarian algorithm, background included. The masks' segments take each pixel's "
             "largest mask; the posterior assignment reads the decoder as a mixture (slot k draws a pixel with "
             "probability m_k, its colour from N(c_k, s^2) with s^2 the image's reconstruction MSE) and takes "
             "each pixel's most likely slot.")
    ours = [r for r in rows if r.get("kind", "ours") == "ours"]
    best = max((r for r in rows if r.get("kind") == "baseline"), key=lambda r: r["fg_ari"], default=None)
    if best is None:  # a summary from before the rows had kinds: the first row is ours
        ours, best = rows[:1], max(rows[1:], key=lambda r: r["fg_ari"])
    for row in ours:
        verdict = "above" if row["fg_ari"] > best["fg_ari"] else "not above"
        rep.text(f"On these images the FG-ARI of {row['method']} ({row['fg_ari']:.3f}) is {verdict} the best "
                 f"baseline's ({best['method']}, {best['fg_ari']:.3f}) after {summary['epochs_run']} epochs.")
    rep.text("Published anchors (other data, far longer training; for scale, not comparison):")
    rep.table(summary["anchors"])


def _reconstruction_section(rep: Report, pics: dict) -> None:
    rep.section("Reconstructions, per-slot masks and contents")
    strips, labels = [], []
    for i in range(len(pics["images"])):
        masks, contents = pics["masks"][i], _hwc(pics["contents"][i])  # (K, H, W), (K, H, W, 3)
        slots = [m[..., None] * c + (1 - m[..., None]) for m, c in zip(masks, contents)]  # on white
        posterior = [colour_ids(pics["posterior"][i] + 1)] if "posterior" in pics else []
        strips.append([_hwc(pics["images"][i]), _hwc(pics["recon"][i]), colour_ids(pics["true"][i]),
                       colour_ids(masks.argmax(0) + 1), *posterior, *slots])  # slot k as in the attention figure
        labels.append(["input", "recon", "truth", "slots", *(["posterior"] if posterior else []),
                       *[f"slot {k + 1}" for k in range(len(masks))]])
    rep.figure(plots.image_strips(strips, labels), "reconstructions",
               caption="Each slot's content times its mask (white where the mask is 0); 'slots' colours "
                       "each pixel by the slot with the largest mask, 'posterior' by its most likely slot "
                       "(the posterior assignment).")


def _attention_section(rep: Report, pics: dict) -> None:
    rep.section("Attention of each iteration")
    attn = pics["attn"]  # (T, B, K, h, w)
    size = pics["images"].shape[-1]
    strips, labels = [], []
    for i in range(min(4, attn.shape[1])):
        maps = [colour_weights(_upsample(attn[t, i], size)) for t in range(len(attn))]
        strips.append([_hwc(pics["images"][i]), *maps])
        labels.append(["input", *[f"iteration {t + 1}" for t in range(len(attn))]])
    rep.figure(plots.image_strips(strips, labels), "attention",
               caption="Softmax over slots of each input cell, each slot in its own colour (mixed by weight): "
                       "the slots start alike and specialise over the iterations.")


def _generation_section(rep: Report, summary: dict, pics: dict) -> None:
    rep.section("Compositional generation")
    rep.text(f"{summary['library_slots']} slots of training images clustered by k-means into K = "
             f"{summary['num_slots']} groups; each new scene takes one random slot of every group and is decoded. "
             f"Fréchet distance to {summary['n_real']} val images in: {summary['feature_space']}.")
    rep.table([{"images": "composed scenes", "Fréchet distance": summary["fd_generated"]},
               {"images": "reconstructions of the val images (reference)",
                "Fréchet distance": summary["fd_reconstruction"]}])
    if "generated" in pics:
        rep.figure(plots.image_grid(_hwc(pics["generated"]), ncols=8), "generated")


def report_sections(rep: Report, run: Run) -> None:
    summary, pics = run.read_summary(), _pictures(run)
    _segmentation_section(rep, summary)
    if pics:
        _reconstruction_section(rep, pics)
        _attention_section(rep, pics)
    _generation_section(rep, summary, pics)


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    keys = [f"val/{s}" for s in SCORES] + ["val/posterior/fg_ari", "best_baseline/fg_ari", "fd_generated",
                                           "fd_reconstruction"]
    rows = [{"run": p.label, **{k: p.summary.get(k) for k in keys}} for p in points]
    rep.section("Segmentation and generation per run")
    rep.table(rows, highlight_best={"val/fg_ari": "max", "val/ari": "max", "val/miou": "max", "fd_generated": "min"})
    best = max(rows, key=lambda r: r["val/fg_ari"])
    return {"best": best["run"]}
