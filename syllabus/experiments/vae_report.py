"""Report sections of `vae`: one run, and the comparison of a sweep (e.g. over `model.latent_dim`).

The page skeleton (`syllabus.report.pages`) adds the headline table, the training curves
(ELBO, reconstruction and KL per epoch) and the configuration; these add the VAE's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from syllabus.data.digits import DIGIT_CLASSES
from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run

SPLITS = ("train", "val", "test")
TERMS = ("elbo", "recon", "kl")  # per image, in nats
PICTURES = "pictures.npz"  # arrays behind the report's image plots
TERM_TEXT = ("ELBO = -(recon + KL), in nats per image; recon is the Bernoulli cross-entropy -log p(x|z) at one "
             "sample z ~ q(z|x), KL is KL(q(z|x) || N(0, I)) in closed form.")


def _pictures(run_dir: Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / PICTURES
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def _pairs_of_rows(top: np.ndarray, bottom: np.ndarray, ncols: int = 8) -> np.ndarray:
    """(N, H, W) inputs and reconstructions -> (2R, C, H, W): each row of inputs above its reconstructions."""
    n = (len(top) // ncols) * ncols or len(top)
    ncols = min(ncols, n)
    a, b = (x[:n].reshape(-1, ncols, *x.shape[1:]) for x in (top, bottom))
    return np.stack([a, b], 1).reshape(-1, ncols, *top.shape[1:])


def iwae_meaning(binary: bool) -> str:
    """What the IWAE bound measures on these pixels, in one sentence."""
    if binary:
        return ("On binary pixels p(x|z) is a normalised Bernoulli likelihood, so the IWAE bound estimates "
                "the test log-likelihood log p(x) from below.")
    return ("These pixels are grey (not 0 or 1): the Bernoulli p(x|z) evaluated at them is not a normalised "
            "distribution over the images, so neither the ELBO nor the IWAE bound is a log-likelihood. Both are "
            "bounds on a Bernoulli score that compares models on the same data only; --set data.binarize=true "
            "makes them likelihood bounds.")


def _iwae_figure(by_k: dict[str, float], elbo: float, binary: bool):
    rows = [{"k": int(k), "IWAE bound": v, "ELBO": elbo} for k, v in by_k.items()]
    title = "Test log-likelihood bounds" if binary else "Bounds on the test Bernoulli score (grey pixels)"
    fig = plots.plot_curves(rows, ["IWAE bound", "ELBO"], x="k", title=title, ylabel="nats per image")
    fig.axes[0].set_xscale("log")
    return fig


def _bounds_section(rep: Report, summary: dict) -> None:
    binary = summary.get("binary_pixels", False)
    rep.section("ELBO and IWAE bound (best checkpoint)")
    rep.text(f"{summary['arch']} VAE with a {summary['latent_dim']}-D latent on {summary['data']} "
             f"{summary['image_size']}x{summary['image_size']}; {summary['params']:,} parameters; best epoch "
             f"{summary['best_epoch']} of {summary['epochs_run']}.")
    rep.table([{"split": s, **{k: summary["splits"][s][k] for k in TERMS}} for s in SPLITS],
              columns=["split", *TERMS])
    rep.text(TERM_TEXT)
    k = summary["iwae_k"]
    rep.table([{"test ELBO": summary["test/elbo"], f"test IWAE (k={k})": summary["test/iwae"],
                "IWAE - ELBO": summary["iwae_gap"]}])
    rep.text(f"The IWAE bound (Burda et al., 2016) with k = {k} importance samples from q(z|x) equals the ELBO "
             "in expectation for k = 1 and tightens as k grows; its gap to the ELBO is the part of the bound lost "
             "to an imperfect posterior. " + iwae_meaning(binary))
    rep.figure(_iwae_figure(summary["iwae_by_k"], summary["test/elbo"], binary), "iwae_by_k")


def _picture_sections(rep: Report, pics: dict[str, np.ndarray], summary: dict) -> None:
    if not pics:
        rep.text(f"No {PICTURES} in this run: pictures are unavailable.")
        return
    rep.section("Reconstructions")
    rep.figure(plots.image_mosaic(_pairs_of_rows(pics["inputs"], pics["recons"])), "reconstructions",
               "Test images (odd rows) above their reconstructions, decoded at the posterior mean.")
    rep.section("Samples from the prior")
    rep.figure(plots.image_mosaic(pics["samples"], ncols=8), "samples", "Pixel means of decoded z ~ N(0, I).")
    rep.section("Interpolations in latent space")
    rep.figure(plots.image_mosaic(pics["interp"]), "interpolations",
               "Each row: a test image, decodings of evenly spaced points on the line between the posterior "
               "means of the two images, and the other test image.")
    rep.section("Latent map of the test set")
    rep.figure(plots.plot_embedding(pics["latent"], pics["labels"], DIGIT_CLASSES, title=summary["latent_map"]),
               "latent_map", "Posterior means of the test images, coloured by digit.")
    if "manifold" in pics:
        q = pics["manifold_q"]
        rep.section("Decoded manifold of the 2-D latent")
        rep.figure(plots.image_mosaic(pics["manifold"]), "manifold",
                   f"Decoded z on a grid of standard-normal quantiles {q[0]:.2f} .. {q[-1]:.2f}: z1 left to right, "
                   f"z2 bottom to top.")


def report_sections(rep: Report, run: Run) -> None:
    summary = run.read_summary()
    _bounds_section(rep, summary)
    _picture_sections(rep, _pictures(run.path), summary)
    rep.section("KL per latent dimension")
    rep.figure(plots.plot_bars({f"z{i + 1}": v for i, v in enumerate(summary["kl_per_dim"])},
                               title="Mean KL per dimension (test)", ylabel="nats"), "kl_per_dim")
    rep.text(f"{summary['active_units']} of {summary['latent_dim']} units are active (variance over the test set "
             f"of their posterior mean above 0.01); the others stay at the prior and carry no information.")


def _point_row(label: str, s: dict) -> dict:
    return {"run": label, "latent": s["latent_dim"], "arch": s["arch"], "test/elbo": s["test/elbo"],
            "test/iwae": s["test/iwae"], "iwae - elbo": s["iwae_gap"], "test/recon": s["test/recon"],
            "test/kl": s["test/kl"], "active units": s["active_units"], "s/epoch": s["time_per_epoch"]}


def _per_run_pictures(rep: Report, points: list[Point]) -> None:
    rep.section("Samples and latent maps of each run")
    for i, p in enumerate(points):
        pics = _pictures(p.path)
        if not pics:
            continue
        rep.figure(plots.image_mosaic(pics["samples"], ncols=8, title=f"{p.label}: samples"),
                   "samples" if i == 0 else f"samples_{i}")
        rep.figure(plots.plot_embedding(pics["latent"], pics["labels"], DIGIT_CLASSES,
                                        title=f"{p.label}: {p.summary['latent_map']}"), f"latent_map_{i}")


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    rows = [_point_row(p.label, p.summary) for p in points]
    binary = all(p.summary.get("binary_pixels", False) for p in points)
    rep.section("Test bounds (best checkpoint of each run)")
    rep.table(rows, highlight_best={"test/elbo": "max", "test/iwae": "max", "test/recon": "min", "s/epoch": "min"})
    rep.text(TERM_TEXT + f" IWAE with k = {points[0].summary['iwae_k']} samples. " + iwae_meaning(binary))
    ranked = sorted(rows, key=lambda r: -r["test/iwae"])
    rep.text(f"Ranked by the test IWAE bound ({'log-likelihood estimate' if binary else 'Bernoulli score'}): "
             + ", ".join(f"{r['run']} ({r['test/iwae']:.2f})" for r in ranked) + ".")
    rep.figure(plots.plot_lines_per_group({p.label: sorted(p.summary["kl_per_dim"], reverse=True) for p in points},
                                          title="KL per latent dimension, largest first", xlabel="rank",
                                          ylabel="nats"), "kl_per_dim")
    _per_run_pictures(rep, points)
    return {"best": ranked[0]["run"], **{k: v for k, v in ranked[0].items() if "/" in k}}
