"""Report sections of `slot-diffusion`: one run, and the comparison of a sweep.

The page skeleton adds the headline table, the training curves (denoising loss, ARI and
FG-ARI per epoch) and the configuration; these add segmentation against the baselines,
samples, reconstructions, the denoising strip and the two noise schedules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from syllabus.nn.diffusion import BETA_SCHEDULES, make_betas
from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run

PICTURES = "pictures.npz"
SEGMENT = ("ari", "fg_ari", "miou")


def _pictures(run_dir: Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / PICTURES
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def _palette(ids: np.ndarray) -> np.ndarray:
    """Segment ids (..., H, W) -> colours (..., H, W, 3) in [0, 1], one fixed colour per id."""
    colours = np.random.default_rng(3).uniform(0.15, 1.0, (256, 3))
    colours[0] = (0.1, 0.1, 0.1)
    return colours[ids.astype(np.int64) % 256]


def segmentation_rows(summary: dict) -> list[dict]:
    rows = [{"method": "slot attention of the diffusion model", **{m: summary[f"test/{m}"] for m in SEGMENT}}]
    rows += [{"method": f"baseline: {name}", **scores} for name, scores in summary.get("baselines", {}).items()]
    return rows


def schedule_figure(cfg_model: dict) -> Figure:
    """abar_t of the linear and scaled-linear schedules with this run's beta_1, beta_T and T."""
    rows = []
    curves = {s: np.cumprod(1 - make_betas(s, cfg_model["beta_start"], cfg_model["beta_end"],
                                           cfg_model["timesteps"]).numpy()) for s in BETA_SCHEDULES}
    for t in range(0, cfg_model["timesteps"], max(1, cfg_model["timesteps"] // 200)):
        rows.append({"t": t, **{s: float(c[t]) for s, c in curves.items()}})
    fig = plots.plot_curves(rows, list(BETA_SCHEDULES), x="t", title="Cumulative alpha (abar_t)", ylabel="abar_t")
    fig.axes[0].set_yscale("log")
    return fig


def upstream_section(rep: Report, summary: dict) -> None:
    """Beside the slot-attention run whose encoder this one started from: its decoder's numbers."""
    up = summary["slot_attention"]
    rep.text(f"The slot encoder started from the slot-attention run {up['run']} and was trained on with the "
             "UNet. That run's own numbers, from its spatial broadcast decoder's masks (its test split; Fréchet "
             f"distances against {up.get('n_generate', '?')} val images in {up.get('feature_space', '?')}, so "
             "comparable in kind, not to the digit, with this run's):")
    rows = [{"decoder": "slot attention's broadcast decoder (masks)", "fg_ari": up.get("test/fg_ari"),
             "ari": up.get("test/ari"), "miou": up.get("test/miou"), "frechet composed": up.get("fd_generated"),
             "frechet real slots": up.get("fd_reconstruction")},
            {"decoder": "this diffusion decoder (attention)", "fg_ari": summary["test/fg_ari"],
             "ari": summary["test/ari"], "miou": summary["test/miou"],
             "frechet composed": summary.get("generate/frechet"),
             "frechet real slots": summary.get("generate/frechet_real_slots")}]
    rep.table(rows)


def report_sections(rep: Report, run: Run) -> None:
    summary, cfg = run.read_summary(), run.read_config()["config"]
    pics = _pictures(run.path)
    rep.section("Object discovery from the slot-input attention")
    rep.text(f"The attention of the last slot-attention iteration, resized to the image and argmax over the "
             f"{summary['num_slots']} slots, scored on {cfg['eval']['n_images']} test images against the instance "
             "masks (FG-ARI ignores background pixels). The baselines use no learning: the floor to clear.")
    rep.table(segmentation_rows(summary), highlight_best={m: "max" for m in SEGMENT})
    if "slot_attention" in summary:
        upstream_section(rep, summary)
    if "seg_images" in pics:
        strips = [[im, _palette(t), _palette(p)] for im, t, p in zip(pics["seg_images"], pics["seg_true"],
                                                                        pics["seg_pred"])]
        rep.figure(plots.image_strips(strips, [["image", "true", "attention"]] * len(strips), ncols=4), "segments")
    rep.section("Reconstruction by sampling from a real image's slots")
    rep.text(f"Rows: the test image, its VAE round trip (the ceiling), then latents sampled from its slots by "
             f"ancestral DDPM ({cfg['eval']['ddpm_steps']} steps) and DDIM ({cfg['eval']['ddim_steps']} steps), "
             "decoded by the VAE. Pixel MSE in [0, 1] and the sampling time of the whole batch:")
    rep.table([{"decoder": k, "mse": summary[f"recon/mse_{k}"], "seconds": summary.get(f"recon/seconds_{k}")}
               for k in ("vae", "ddpm", "ddim")], highlight_best={"mse": "min"})
    if "recon_real" in pics:
        rows = np.concatenate([pics[k] for k in ("recon_real", "recon_vae", "recon_ddpm", "recon_ddim")])
        rep.figure(plots.image_grid(rows, ncols=len(pics["recon_real"])), "reconstructions")
    rep.section("Compositional generation")
    rep.text(f"Slots of {cfg['eval']['library_images']} training images clustered by k-means into "
             f"{summary['num_slots']} groups; each new scene takes one slot from every group and is sampled with "
             f"{summary['generate/sampler']}. Fréchet distance in {summary['generate/features']}, against real "
             "test images; for scale, the same decoder given real images' slots, and the VAE round trip.")
    refs = (("composed slots", "frechet"), ("real images' slots", "frechet_real_slots"),
            ("VAE round trip", "frechet_vae"))
    rep.table([{"images": name, "frechet": summary[f"generate/{k}"]} for name, k in refs if f"generate/{k}" in summary])
    if "generated" in pics:
        rep.figure(plots.image_grid(pics["generated"][:32], ncols=8), "samples")
    if "strip" in pics:
        rep.section("Denoising: decoded z_t along ancestral sampling")
        labels = [f"t={t}" for t in pics["strip_t"]] + ["z_0"]
        rep.figure(plots.image_strips([list(s) for s in pics["strip"]], [labels] * len(pics["strip"])), "denoising")
    rep.section("Noise schedules")
    rep.text(f"This run: {summary['beta_schedule']}. linear spaces beta_t evenly (the assignment); scaled_linear "
             "spaces sqrt(beta_t) evenly (latent diffusion, SlotDiffusion's code). --set model.beta_schedule="
             "scaled_linear trains with the other.")
    rep.figure(schedule_figure(cfg["model"]), "schedules")
    if summary.get("vae") == "trained here":
        rep.text(f"VAE trained here first: validation MSE {summary['vae/val_mse']:.4f} ([-1, 1] pixels) after "
                 f"{summary['vae/epochs']} epochs ({summary['vae/time']:.0f} s); latents {summary['latent_shape']}, "
                 f"scaled by {summary['latent_scale']:.3f} to unit variance.")


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    keys = ["test/fg_ari", "test/ari", "recon/mse_ddpm", "recon/mse_ddim", "generate/frechet", "val/loss"]
    rows = [{"run": p.label, **{k: p.summary.get(k) for k in keys}} for p in points]
    rep.section("Segmentation, reconstruction and generation per run")
    rep.table(rows, highlight_best={"test/fg_ari": "max", "test/ari": "max", "recon/mse_ddpm": "min",
                                    "recon/mse_ddim": "min", "generate/frechet": "min", "val/loss": "min"})
    return {}
