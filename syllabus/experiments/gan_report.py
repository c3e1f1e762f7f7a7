"""Report sections of `gan`: one run, and the scenario/mitigation comparison of a sweep.

The page skeleton (`syllabus.report.pages`) adds the headline table, the training curves and
the configuration; these functions add what is this experiment's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.report.pages import Point
from syllabus.runs import Run, load_checkpoint

FRECHET_NOTE = ("Fréchet distance: between Gaussians fitted to generated and held-out real images in the "
                "penultimate features of a digit classifier (a ResNet-8 trained on the real training digits), "
                "not Inception FID. Lower is better; the real-vs-real value (training digits against held-out "
                "digits) is the floor.")
TABLE_KEYS = {"classes_covered": "classes covered", "kl_uniform": "KL to uniform", "frechet": "Fréchet (clf)",
              "g_grad_norm": "G grad norm", "d_gap": "D gap train-heldout"}
BEST = {"classes covered": "max", "KL to uniform": "min", "Fréchet (clf)": "min", "min classes": "max"}


# --------------------------------------------------------------------------- data helpers


def step_rows(rows: list[dict]) -> list[dict]:
    """The per-step records, keys without their `train/` prefix."""
    return [{"step": r["step"], **{k.removeprefix("train/"): v for k, v in r.items() if k.startswith("train/")}}
            for r in rows if "step" in r]


def eval_rows(run: Run) -> list[dict]:
    """One row per evaluation: the step it was made at and the `val/` measures without their prefix."""
    period = run.read_config()["config"]["train"]["steps_per_epoch"]
    return [{"step": r["epoch"] * period, **{k.removeprefix("val/"): v for k, v in r.items() if k.startswith("val/")}}
            for r in run.read_metrics() if "step" not in r]


def smooth(rows: list[dict], keys: Sequence[str], window: int) -> list[dict]:
    """Trailing moving average of `keys` over the rows holding them all, keeping "step"."""
    steps = [r for r in rows if all(k in r for k in keys)]
    out = []
    for i, r in enumerate(steps):
        span = steps[max(0, i - window + 1): i + 1]
        out.append({"step": r["step"], **{k: float(np.mean([s[k] for s in span])) for k in keys}})
    return out


def sample_grids(run_dir: Path) -> list[tuple[int, np.ndarray]]:
    """(step, (N, S, S) images in [0, 1]) for every saved fixed-noise sample batch, in step order."""
    states = [load_checkpoint(f) for f in sorted(Path(run_dir, "checkpoints").glob("samples-*.pt"))]
    return sorted(((int(s["step"]), (s["samples"][:, 0].numpy() + 1) / 2) for s in states), key=lambda t: t[0])


def labelled_mosaic(rows: Sequence[np.ndarray], labels: Sequence[str], title: str) -> Figure:
    """One row of images per label (e.g. per evaluation step, or per run), the label at its left."""
    images = np.stack(rows)  # (R, N, S, S)
    fig = plots.image_mosaic(images, title=title)
    ax, (h, pad) = fig.axes[0], (images.shape[-2], 1)
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([i * (h + pad) + (h - 1) / 2 for i in range(len(labels))], labels=list(labels), fontsize=8)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    return fig


def short_labels(labels: Sequence[str]) -> list[str]:
    """Sweep labels without the `key=value` parts every label shares (e.g. `epochs=3`)."""
    parts = [label.split(",") for label in labels]
    shared = set.intersection(*map(set, parts)) if len(parts) > 1 else set()
    return [",".join(p for p in ps if p not in shared) or label for ps, label in zip(parts, labels)]


def _log_y(fig: Figure) -> Figure:
    for ax in fig.axes:
        ax.set_yscale("symlog", linthresh=1e-3)
    return fig


def _window(steps: list[dict]) -> int:
    return max(1, len(steps) // 60)


# --------------------------------------------------------------------------- one run


def report_sections(rep: Report, run: Run) -> None:
    summary = run.read_summary()
    mitig = ", ".join(summary["mitigations"]) or "none"
    rep.section("Result after the last step")
    rep.table([{**{name: summary[k] for k, name in TABLE_KEYS.items()}, "Fréchet real-vs-real": summary["frechet_real"],
                "classifier accuracy": summary["classifier_accuracy"]}])
    rep.text(f"Scenario {summary['scenario']}: {summary['scenario_what']}. Mitigations in force: {mitig}. "
             f"The GAN trained on {summary['n_gan_train']} real images for {summary['steps']} steps "
             f"({summary['seconds']:.0f} s). Fewest classes covered at any evaluation: "
             f"{summary['min_classes_covered']}; largest D gap: {summary['max_d_gap']:.3f}.")
    rep.text(FRECHET_NOTE)
    _step_section(rep, step_rows(run.read_metrics()))
    _eval_section(rep, eval_rows(run), summary["scenario"])
    _samples_section(rep, run.path, summary)
    rep.section("Settings in force (after scenario and mitigations)")
    rep.table([{"setting": k, "value": v} for k, v in summary["settings"].items()])


def _step_section(rep: Report, steps: list[dict]) -> None:
    if not steps:
        return
    window = _window(steps)
    smoothed = smooth(steps, ["d_real", "d_fake", "g_grad_norm", "d_grad_norm"], window)
    rep.section("Every step: D outputs and gradient norms")
    rep.text(f"Moving averages over {window} steps of the values logged at every step.")
    rep.figure(plots.plot_curves(smoothed, ["d_real", "d_fake"], x="step", title="Mean D(x) and D(G(z))",
                                 ylabel="probability 'real'"), "d_outputs")
    rep.figure(_log_y(plots.plot_curves(smoothed, ["g_grad_norm", "d_grad_norm"], x="step", title="Gradient norms",
                                        ylabel="L2 norm (symlog)")), "grad_norms")


def _eval_section(rep: Report, evals: list[dict], label: str) -> None:
    rep.section("Mode collapse, sample quality and D overfitting over training")
    rep.text("Classes covered: digit classes given at least the threshold share of the fixed-noise samples by "
             "the classifier; KL to uniform: 0 when every digit is equally frequent, log 10 = 2.30 for one.")
    rep.figure(plots.plot_overlaid_grid({label: evals}, ["classes_covered", "kl_uniform", "frechet", "d_gap"],
                                        x="step"), "collapse")
    rep.figure(plots.plot_curves(evals, ["d_train_real", "d_heldout_real"], x="step",
                                 title="Mean D(x): D's training images vs held-out images", ylabel="D(x)"),
               "d_overfit")


def _samples_section(rep: Report, run_dir: Path, summary: dict) -> None:
    grids = sample_grids(run_dir)
    rep.section("Samples over training (the same noise every time)")
    if grids:
        rep.figure(labelled_mosaic([g for _, g in grids], [f"step {s}" for s, _ in grids], "Fixed-noise samples"),
                   "samples")
    hist = {str(k): v for k, v in enumerate(summary["class_hist"])}
    rep.figure(plots.plot_bars(hist, title="Classes of the last samples (by the classifier)", ylabel="share"),
               "class_hist")


# --------------------------------------------------------------------------- comparison


def _point_row(p: Point) -> dict:
    s = p.summary
    return {"run": p.label, "scenario": s["scenario"], "mitigations": ", ".join(s["mitigations"]) or "none",
            **{name: s[k] for k, name in TABLE_KEYS.items()}, "min classes": s["min_classes_covered"],
            "max D gap": s["max_d_gap"], "s": s["seconds"]}


def _per_scenario(points: list[Point], rows: list[list[dict]], key: str) -> Figure:
    """`key` against step: one panel per scenario, one line per variant (the label without its scenario)."""
    lines: dict[str, list[dict]] = {}
    for p, runs in zip(points, rows):
        scenario = p.summary["scenario"]
        variant = ",".join(part for part in p.label.split(",") if not part.startswith("scenario=")) or scenario
        lines.setdefault(variant, []).extend({"step": r["step"], scenario: r[key]} for r in runs if key in r)
    panels = list(dict.fromkeys(p.summary["scenario"] for p in points))
    return plots.plot_overlaid_grid(lines, panels, x="step", titles=[f"{key}: {s}" for s in panels])


def sweep_sections(rep: Report, points: list[Point]) -> dict:
    rows = [_point_row(p) for p in points]
    rep.section("Every scenario and mitigation, the same measures")
    rep.table(rows, highlight_best=BEST)
    rep.text("G grad norm: mean over the last period's steps; D gap: mean D(x) on D's training images minus on "
             "held-out images, at the end (max D gap: largest at any evaluation). " + FRECHET_NOTE)
    rep.section("Over training: one panel per scenario, one line per variant")
    steps = [step_rows(p.run.read_metrics()) for p in points]
    smoothed = [smooth(s, ["g_grad_norm"], _window(s)) for s in steps]
    rep.figure(_log_y(_per_scenario(points, smoothed, "g_grad_norm")), "g_grad_norm",
               "G gradient norm, moving average (symlog scale).")
    evals = [eval_rows(p.run) for p in points]
    for key, caption in (("classes_covered", "classes covered"), ("kl_uniform", "KL(class histogram || uniform)"),
                         ("frechet", "Fréchet distance in classifier features"),
                         ("d_gap", "mean D(x) on D's training images minus on held-out images")):
        rep.figure(_per_scenario(points, evals, key), f"{key}_curves", caption)
    rep.section("Last samples of each run")
    finals = [(p.label, sample_grids(p.path)) for p in points]
    finals = [(label, g[-1][1]) for label, g in finals if g]
    if finals:
        rep.figure(labelled_mosaic([m for _, m in finals], short_labels([lab for lab, _ in finals]),
                                   "Last fixed-noise samples"), "samples")
    best = min(rows, key=lambda r: r["Fréchet (clf)"])
    return {"comparison": rows, "best": best["run"]}
