"""Reports of `gan`: one run, and the scenario/mitigation comparison of a sweep."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from syllabus.report import plots
from syllabus.report.html import Report
from syllabus.runs import Run, load_checkpoint, read_json, write_json

FRECHET_NOTE = ("Fréchet distance: between Gaussians fitted to generated and held-out real images in the "
                "penultimate features of the run's own digit classifier (a ResNet-8 trained on the real "
                "training digits), not Inception FID. Lower is better; the real-vs-real value "
                "(training digits against held-out digits) is the floor.")
TABLE_KEYS = {"classes_covered": "classes covered", "kl_uniform": "KL to uniform", "frechet": "Fréchet (clf)",
              "g_grad_norm": "G grad norm", "d_gap": "D gap train-heldout"}
BEST = {"classes covered": "max", "KL to uniform": "min", "Fréchet (clf)": "min"}
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm")


# --------------------------------------------------------------------------- data helpers


def _evals(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "frechet" in r]


def smooth(rows: list[dict], keys: Sequence[str], window: int) -> list[dict]:
    """Trailing moving average of `keys` over the per-step rows (those holding them), keeping "step"."""
    steps = [r for r in rows if all(k in r for k in keys)]
    out = []
    for i, r in enumerate(steps):
        span = steps[max(0, i - window + 1): i + 1]
        out.append({"step": r["step"], **{k: float(np.mean([s[k] for s in span])) for k in keys}})
    return out


def sample_grids(run_dir: Path) -> list[tuple[int, np.ndarray]]:
    """(step, (N, S, S) images in [0, 1]) for every saved fixed-noise sample batch, in step order."""
    files = sorted(Path(run_dir, "checkpoints").glob("samples-*.pt"))
    states = [load_checkpoint(f) for f in files]
    return [(int(s["step"]), (s["samples"][:, 0].numpy() + 1) / 2) for s in states]


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


def _log_y(fig: Figure) -> Figure:
    for ax in fig.axes:
        ax.set_yscale("symlog", linthresh=1e-3)
    return fig


def _window(rows: list[dict]) -> int:
    return max(1, len([r for r in rows if "g_loss" in r]) // 60)


# --------------------------------------------------------------------------- one run


def single_report(run: Run) -> Path:
    saved, summary, rows = run.read_config(), run.read_summary(), run.read_metrics()
    cfg = saved["config"]
    mitig = ", ".join(summary["mitigations"]) or "none"
    rep = Report(f"gan: {summary['scenario']} ({mitig})",
                 f"profile {saved['profile']} · {cfg['data']['name']} {summary['image_size']}px · "
                 f"{cfg['model']['arch']} pair · {run.path}", plots_dir=run.plots_dir)
    rep.section("Result after the last step")
    rep.table([{**{name: summary[k] for k, name in TABLE_KEYS.items()}, "Fréchet real-vs-real": summary["frechet_real"],
                "classifier accuracy": summary["classifier_accuracy"]}])
    rep.text(f"Scenario {summary['scenario']}: {summary['scenario_what']}. Mitigations in force: {mitig}. "
             f"The GAN trained on {summary['n_gan_train']} real images for {summary['steps']} generator steps "
             f"({summary['seconds']:.0f} s). Fewest classes covered at any evaluation: "
             f"{summary['min_classes_covered']}; largest D gap: {summary['max_d_gap']:.3f}.")
    rep.text(FRECHET_NOTE)
    _step_section(rep, rows)
    _eval_section(rep, rows, summary["scenario"])
    _samples_section(rep, run.path, summary)
    rep.section("Settings in force (after scenario and mitigations)")
    rep.table([{"setting": k, "value": v} for k, v in summary["settings"].items()])
    rep.details("config.json", json.dumps(saved, indent=2))
    return rep.write(run.path / "report.html")


def _step_section(rep: Report, rows: list[dict]) -> None:
    steps = smooth(rows, STEP_KEYS, _window(rows))
    rep.section("Every step: losses, D outputs, gradient norms")
    rep.text(f"Moving averages over {_window(rows)} steps of the values logged at every step.")
    rep.figure(plots.plot_curves(steps, ["d_loss", "g_loss"], x="step", title="Losses", ylabel="loss"), "losses")
    rep.figure(plots.plot_curves(steps, ["d_real", "d_fake"], x="step", title="Mean D(x) and D(G(z))",
                                 ylabel="probability 'real'"), "d_outputs")
    rep.figure(_log_y(plots.plot_curves(steps, ["g_grad_norm", "d_grad_norm"], x="step", title="Gradient norms",
                                        ylabel="L2 norm (symlog)")), "grad_norms")


def _eval_section(rep: Report, rows: list[dict], label: str) -> None:
    evals = _evals(rows)
    rep.section("Mode collapse, sample quality and D overfitting over training")
    rep.text("Classes covered: digit classes given at least the threshold share of the fixed-noise samples by "
             "the run's classifier; KL to uniform: 0 when every digit is equally frequent, log 10 = 2.30 for one.")
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


def _point_row(label: str, run_dir: Path) -> dict:
    s = read_json(run_dir / "summary.json")
    return {"run": label, "scenario": s["scenario"], "mitigations": ", ".join(s["mitigations"]) or "none",
            **{name: s[k] for k, name in TABLE_KEYS.items()}, "min classes": s["min_classes_covered"],
            "max D gap": s["max_d_gap"], "s": s["seconds"]}


def _per_scenario(labels: list[str], scenarios: list[str], rows: list[list[dict]], key: str) -> Figure:
    """`key` against step: one panel per scenario, one line per variant (the label without its scenario)."""
    lines: dict[str, list[dict]] = {}
    for label, scenario, runs in zip(labels, scenarios, rows):
        variant = ",".join(p for p in label.split(",") if not p.startswith("scenario=")) or scenario
        lines.setdefault(variant, []).extend({"step": r["step"], scenario: r[key]} for r in runs if key in r)
    panels = list(dict.fromkeys(scenarios))
    return plots.plot_overlaid_grid(lines, panels, x="step", titles=[f"{key}: {s}" for s in panels])


def sweep_report(points: list[tuple[str, Path]], out: Path) -> Path:
    out = Path(out)
    rows = [_point_row(label, d) for label, d in points]
    metrics = {label: Run(d).read_metrics() for label, d in points}
    rep = Report("gan: scenarios and mitigations", f"{len(points)} runs · {out}", plots_dir=out / "plots")
    rep.section("Every scenario and mitigation, the same measures")
    rep.table(rows, highlight_best={**BEST, "min classes": "max"})
    rep.text("G grad norm: mean over the last period's steps; D gap: mean D(x) on D's training images minus on "
             "held-out images, at the end (max D gap: largest at any evaluation). " + FRECHET_NOTE)
    for label, d in points:
        rep.link(os.path.relpath(d / "report.html", out), f"report of {label}")
    rep.section("Over training: one panel per scenario, one line per variant")
    scenarios = [r["scenario"] for r in rows]
    smoothed = [smooth(m, ["g_grad_norm"], _window(m)) for m in metrics.values()]
    rep.figure(_log_y(_per_scenario(list(metrics), scenarios, smoothed, "g_grad_norm")), "g_grad_norm",
               "G gradient norm, moving average (symlog scale).")
    evals = [_evals(m) for m in metrics.values()]
    for key, caption in (("classes_covered", "classes covered"), ("kl_uniform", "KL(class histogram || uniform)"),
                         ("frechet", "Fréchet distance in classifier features"),
                         ("d_gap", "mean D(x) on D's training images minus on held-out images")):
        rep.figure(_per_scenario(list(metrics), scenarios, evals, key), f"{key}_curves", caption)
    rep.figure(plots.plot_bars({r["run"]: r["Fréchet (clf)"] for r in rows}, title="Fréchet distance (classifier "
                               "features), last step", ylabel="Fréchet"), "frechet")
    rep.section("Last samples of each run")
    finals = [(label, sample_grids(d)) for label, d in points]
    finals = [(label, g[-1][1]) for label, g in finals if g]
    if finals:
        rep.figure(labelled_mosaic([m for _, m in finals], [lab for lab, _ in finals], "Last fixed-noise samples"),
                   "final_samples")
    best = min(rows, key=lambda r: r["Fréchet (clf)"])
    write_json(out / "summary.json", {"points": rows, "best": best["run"]})
    return rep.write(out / "report.html")
