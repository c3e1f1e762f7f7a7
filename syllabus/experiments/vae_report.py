"""Reports of `vae`: one run, and the comparison of a sweep (e.g. over `model.latent_dim`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from syllabus.data.digits import DIGIT_CLASSES
from syllabus.experiments.vae import PICTURES, SPLITS, TERMS
from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run, read_json, write_json

TERM_TEXT = ("ELBO = -(recon + KL), in nats per image; recon is the Bernoulli cross-entropy -log p(x|z) at one "
             "sample z ~ q(z|x), KL is KL(q(z|x) || N(0, I)) in closed form.")


def _epochs(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "step" not in r]


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


def _iwae_figure(by_k: dict[str, float], elbo: float):
    rows = [{"k": int(k), "IWAE bound": v, "ELBO": elbo} for k, v in by_k.items()]
    fig = plots.plot_curves(rows, ["IWAE bound", "ELBO"], x="k", title="Test log-likelihood bounds",
                            ylabel="nats per image")
    fig.axes[0].set_xscale("log")
    return fig


def _bounds_section(rep: Report, summary: dict) -> None:
    rep.section("ELBO and log-likelihood (best checkpoint)")
    rep.table([{"split": s, **{k: summary["splits"][s][k] for k in TERMS}} for s in SPLITS],
              columns=["split", *TERMS])
    rep.text(TERM_TEXT)
    k = summary["iwae_k"]
    rep.table([{"test ELBO": summary["test/elbo"], f"test IWAE (k={k})": summary["test/iwae"],
                "IWAE - ELBO": summary["iwae_gap"]}])
    rep.text(f"The IWAE bound (Burda et al., 2016) with k importance samples from q(z|x) equals the ELBO in "
             f"expectation for k = 1 and rises towards log p(x) as k grows; with k = {k} it is the test "
             f"log-likelihood estimate. Its gap to the ELBO is the part of the bound lost to an imperfect posterior.")
    rep.figure(_iwae_figure(summary["iwae_by_k"], summary["test/elbo"]), "iwae_by_k")


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


def single_report(run: Run) -> Path:
    saved, summary, rows = run.read_config(), run.read_summary(), run.read_metrics()
    cfg = saved["config"]
    rep = Report(f"vae: {summary['arch']}, latent {summary['latent_dim']}",
                 f"profile {saved['profile']} · {summary['data']} {summary['image_size']}x{summary['image_size']} "
                 f"· {run.path}", plots_dir=run.plots_dir)
    _bounds_section(rep, summary)
    rep.text(f"Best epoch {summary['best_epoch']} of {summary['epochs_run']} (by {cfg['train']['monitor']}); "
             f"{summary['time_per_epoch']:.2f} s per training epoch; {summary['params']:,} parameters.")
    rep.section("Training curves")
    rep.figure(plots.plot_metric_grid(_epochs(rows), list(TERMS)), "curves", TERM_TEXT)
    _picture_sections(rep, _pictures(run.path), summary)
    rep.section("KL per latent dimension")
    rep.figure(plots.plot_bars({f"z{i + 1}": v for i, v in enumerate(summary["kl_per_dim"])},
                               title="Mean KL per dimension (test)", ylabel="nats"), "kl_per_dim")
    rep.text(f"{summary['active_units']} of {summary['latent_dim']} units are active (variance over the test set "
             f"of their posterior mean above 0.01); the others stay at the prior and carry no information.")
    rep.section("Configuration")
    rep.details("config.json", json.dumps(saved, indent=2))
    return rep.write(run.path / "report.html")


def _point_row(label: str, s: dict) -> dict:
    return {"run": label, "latent": s["latent_dim"], "arch": s["arch"], "test/elbo": s["test/elbo"],
            "test/iwae": s["test/iwae"], "iwae - elbo": s["iwae_gap"], "test/recon": s["test/recon"],
            "test/kl": s["test/kl"], "active units": s["active_units"], "s/epoch": s["time_per_epoch"]}


def _per_run_pictures(rep: Report, points: list[tuple[str, Path]], summaries: list[dict]) -> None:
    rep.section("Samples and latent maps of each run")
    for i, ((label, d), s) in enumerate(zip(points, summaries)):
        pics = _pictures(d)
        if not pics:
            continue
        rep.figure(plots.image_mosaic(pics["samples"], ncols=8, title=f"{label}: samples"), f"samples_{i}")
        rep.figure(plots.plot_embedding(pics["latent"], pics["labels"], DIGIT_CLASSES,
                                        title=f"{label}: {s['latent_map']}"), f"latent_map_{i}")


def sweep_report(points: list[tuple[str, Path]], out: Path) -> Path:
    out = Path(out)
    summaries = [read_json(d / "summary.json") for _, d in points]
    rows = [_point_row(label, s) for (label, _), s in zip(points, summaries)]
    rep = Report("vae: comparison", f"{len(points)} runs · {out}", plots_dir=out / "plots")
    rep.section("Test bounds (best checkpoint of each run)")
    rep.table(rows, highlight_best={"test/elbo": "max", "test/iwae": "max", "test/recon": "min", "s/epoch": "min"})
    rep.text(TERM_TEXT + f" IWAE with k = {summaries[0]['iwae_k']} samples.")
    ranked = sorted(rows, key=lambda r: -r["test/iwae"])
    rep.text("Ranked by the test log-likelihood estimate: "
             + ", ".join(f"{r['run']} ({r['test/iwae']:.2f})" for r in ranked) + ".")
    for label, d in points:
        rep.link(os.path.relpath(d / "report.html", out), f"report of {label}")
    rep.section("Curves")
    curves = {label: _epochs(Run(d).read_metrics()) for label, d in points}
    rep.figure(plots.plot_overlaid_grid(curves, ["val/elbo", "val/recon", "val/kl", "train/elbo"]), "curves")
    rep.figure(plots.plot_lines_per_group({label: sorted(s["kl_per_dim"], reverse=True)
                                           for (label, _), s in zip(points, summaries)},
                                          title="KL per latent dimension, largest first", xlabel="rank",
                                          ylabel="nats"), "kl_per_dim")
    _per_run_pictures(rep, points, summaries)
    summary = {"points": rows, "best": ranked[0]["run"], **{k: v for k, v in ranked[0].items() if "/" in k}}
    write_json(out / "summary.json", summary)
    return rep.write(out / "report.html")
