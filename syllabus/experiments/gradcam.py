"""`gradcam`: Grad-CAM on a trained `resnet-norms` classifier (assignment 1A, part 3).

The classifier is `--set model.run=<resnet-norms run>` (its `best.pt` and config), or the
variant with the best validation accuracy of a `resnet-norms` sweep directory; with no run
given, the runner trains a `resnet-norms` run of the same profile first under the same `--out`
root (declared reuse: this module imports neither the runner nor resnet-norms). Grad-CAM
explains the class `explain.target` (the true class, as the assignment asks; `pred`; or a class
name) at `explain.layers` (default: the 2n convolutions of the last stage, at 1/4 of the input
resolution, their maps averaged).

For each chosen class it draws K correctly and K wrongly classified validation images with
their heat maps and overlays. On `shapes`, whose object masks are known, every validation
image's map is scored (energy in the mask, pointing game) beside an image-blind uniform map
and a centred Gaussian, per class and for correct vs wrong predictions. Given a sweep, every
variant is scored the same way and their maps are drawn side by side for the same images.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from syllabus.classify import predict
from syllabus.config import nested, ranged
from syllabus.data.images import ImageDataConfig, check_image_data, image_splits
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, finished_run, get_experiment, load_trained, register
from syllabus.experiments.gradcam_report import report_sections
from syllabus.explain.gradcam import GradCAM, last_stage_convs, resolve_layers
from syllabus.metrics.localization import (
    baseline_scores,
    difference_interval,
    empty_maps,
    localization_scores,
    mean_and_halfwidth,
)
from syllabus.runs import Run, read_json
from syllabus.train import make_accelerator, seed_everything

UPSTREAM = "resnet-norms"  # the experiment whose classifiers are explained

# The assignment's seven species (Indian Birds); matched to folder names loosely (see `match_classes`).
BIRD_CLASSES = ("Cattle Egret", "Coppersmith Barbet", "Indian Peacock", "Red Wattled Lapwing",
                "Ruddy Shelduck", "White Breasted Kingfisher", "White Breasted Waterhen")
EXPLANATIONS = "explanations.npz"


@dataclass
class ModelConfig:
    run: str = ""  # a resnet-norms run or sweep directory; empty: the runner trains one first


@dataclass
class DataConfig:
    root: str = ""  # real dataset folder, if not the one the classifier was trained on
    dir: str = ""  # cache of embedded sets, likewise


@dataclass
class ExplainConfig:
    layers: tuple[str, ...] = ()  # module names; empty: the convolutions of the last stage
    classes: tuple[str, ...] = ()  # class names to draw; empty: every class
    per_class: int = ranged(5, 1)  # K correct and K wrong validation images per class
    target: str = "true"  # the class explained: true, pred, or a class name
    batch_size: int = ranged(128, 1)
    gaussian_sigma: float = ranged(0.25, 0, lo_open=True)  # centred-Gaussian baseline, fraction of the side
    compare_per_class: int = ranged(1, 1)  # images per class in the side-by-side of a sweep's variants


@dataclass
class Config:
    model: ModelConfig = nested(ModelConfig)
    data: DataConfig = nested(DataConfig)
    explain: ExplainConfig = nested(ExplainConfig)
    seed: int = 0


def smoke() -> Config:
    return Config(explain=ExplainConfig(classes=("circle", "square"), per_class=2, batch_size=64))


def quick() -> Config:
    return Config(explain=ExplainConfig(per_class=5))


def full() -> Config:
    """The assignment: the seven species, five correct and five wrong images each."""
    return Config(explain=ExplainConfig(classes=BIRD_CLASSES, per_class=5, batch_size=32))


# --- the classifier(s) to explain ---------------------------------------------------------


@dataclass
class Classifier:
    """A finished resnet-norms run: where it is, its config and classes."""

    label: str  # the sweep point ("norm=gn"), or "" for a single run
    path: Path
    config: Any  # the run's resnet-norms config
    classes: list[str]
    val_accuracy: float

    def build(self) -> torch.nn.Module:
        return get_experiment(UPSTREAM).build_model(self.config, {"classes": self.classes})

    def load(self, device: torch.device) -> torch.nn.Module:
        return load_trained(self.path)[0].to(device)


def load_classifier(path: Path, label: str = "") -> Classifier:
    """A resnet-norms run directory as a Classifier; UsageError naming what is missing."""
    config = finished_run(path, "model.run", UPSTREAM, " or a sweep of them")
    summary = read_json(path / "summary.json")
    return Classifier(label, path, config, list(summary["classes"]), float(summary["val/accuracy"]))


def _point_dir(sweep: Path, recorded: str) -> Path:
    """A sweep point's directory as recorded, else its sibling of the same name (a moved sweep)."""
    path = Path(recorded)
    return path if path.is_dir() else sweep.parent / path.name


def find_classifiers(run_dir: str) -> tuple[list[Classifier], bool]:
    """The run's classifier, or every finished point of a sweep; and whether it was a sweep."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UsageError(f"model.run: no such run directory: {path}")
    if not (path / "sweep.json").exists():
        return [load_classifier(path)], False
    info = read_json(path / "sweep.json")
    if info.get("experiment") != UPSTREAM:
        raise UsageError(f"model.run: {path} is a sweep of {info.get('experiment')!r}, not {UPSTREAM}")
    points = [load_classifier(_point_dir(path, p["dir"]), p["label"]) for p in info["points"] if p["status"] == "ok"]
    if not points:
        raise UsageError(f"model.run: the sweep {path} has no finished points")
    return points, True


def best_classifier(classifiers: list[Classifier]) -> Classifier:
    """The one with the best validation accuracy (the first on a tie)."""
    return max(classifiers, key=lambda c: c.val_accuracy)


def data_config(classifier_data: ImageDataConfig, cfg: Config) -> ImageDataConfig:
    """The classifier's data settings, with `data.root` / `data.dir` replaced where given."""
    from dataclasses import replace

    changes = {k: v for k, v in (("root", cfg.data.root), ("dir", cfg.data.dir)) if v}
    return replace(classifier_data, **changes)


# --- classes, targets, layers -----------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name).lower()


def match_classes(wanted: tuple[str, ...], classes: list[str]) -> list[int]:
    """Indices of `wanted` among `classes`, ignoring case, spaces, hyphens and underscores."""
    if not wanted:
        return list(range(len(classes)))
    index = {_key(c): i for i, c in enumerate(classes)}
    missing = [w for w in wanted if _key(w) not in index]
    if missing:
        raise UsageError(f"explain.classes: {', '.join(map(repr, missing))} not in the dataset; "
                         f"its classes: {', '.join(classes)}")
    return [index[_key(w)] for w in wanted]


def target_class(target: str, classes: list[str]) -> int | None:
    """-1 for the true class, None for the predicted one, else the index of a named class."""
    if target in ("true", "pred"):
        return -1 if target == "true" else None
    index = {_key(c): i for i, c in enumerate(classes)}
    if _key(target) not in index:
        raise UsageError(f"explain.target={target!r}: expected true, pred or a class name "
                         f"({', '.join(classes)})")
    return index[_key(target)]


def layers_for(model: torch.nn.Module, cfg: Config) -> list[str]:
    """`explain.layers`, or the last stage's convolutions; UsageError naming the key."""
    names = list(cfg.explain.layers) or last_stage_convs(model)
    try:
        resolve_layers(model, names)
    except UsageError as e:
        raise UsageError(f"explain.layers: {e}") from None
    return names


def _dataset_classes(cfg: Config) -> list[str]:
    """Class names of the dataset before any classifier exists (shapes, or birds' folders under data.root)."""
    data = ImageDataConfig(name="birds" if cfg.data.root else "shapes", root=cfg.data.root, dir=cfg.data.dir)
    if data.name == "shapes":
        from syllabus.data.shapes import SHAPE_CLASSES

        return list(SHAPE_CLASSES)
    from torchvision.datasets.folder import find_classes

    from syllabus.data.birds import find_layout
    from syllabus.data.paths import data_dir

    root = Path(data.root).expanduser() if data.root else data_dir(data.dir or None) / "birds"
    return find_classes(str(find_layout(root)[1]["train"]))[0]


def check(cfg: Config) -> None:
    """Everything that can be wrong, before training or loading anything heavy."""
    if cfg.model.run:
        classifiers, _ = find_classifiers(cfg.model.run)
        check_image_data(data_config(best_classifier(classifiers).config.data, cfg))
        classes = best_classifier(classifiers).classes
        for c in classifiers:
            layers_for(c.build(), cfg)
    else:  # the runner validates and trains the resnet-norms run first; layers are checked on its model
        classes = _dataset_classes(cfg)
    match_classes(cfg.explain.classes, classes)
    target_class(cfg.explain.target, classes)


# --- the validation data ------------------------------------------------------------------------


@dataclass
class ValData:
    """The validation split as the classifier saw it (evaluation transform), through the image API."""

    dataset: torch.utils.data.Dataset  # items (image, label) or, with masks, (image, label, mask)
    num_workers: int
    unnormalize: Callable[[torch.Tensor], torch.Tensor]
    masks: np.ndarray | None = None  # (N, H, W) bool object masks (shapes)

    def display(self, indices: np.ndarray) -> np.ndarray:
        """Images for the eye. (M, H, W, 3) uint8."""
        if len(indices) == 0:
            return np.zeros((0, 1, 1, 3), np.uint8)
        x = self.unnormalize(torch.stack([self.dataset[int(i)][0] for i in indices]))  # (M, 3, H, W) in [0, 1]
        return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def load_val(data: ImageDataConfig) -> ValData:
    """The val split; on shapes with its object masks (one read of the split)."""
    with_masks = data.name == "shapes"
    splits = image_splits(data, with_masks=with_masks)
    val = ValData(splits.eval_splits["val"], data.num_workers, splits.unnormalize)
    if with_masks:
        val.masks = np.stack([item[2].numpy() for item in val.dataset]).astype(bool)  # (N, H, W)
    return val


# --- explaining ---------------------------------------------------------------------------------------


@dataclass
class Scan:
    """One classifier over the whole val split: predictions and (with masks) localisation scores."""

    true: np.ndarray  # (N,)
    pred: np.ndarray  # (N,)
    prob: np.ndarray  # (N, K)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # "energy", "pointing", "empty": (N,)

    @property
    def correct(self) -> np.ndarray:
        return self.true == self.pred


def _targets(target: int | None, labels: torch.Tensor) -> torch.Tensor | int | None:
    return labels if target == -1 else target


def scan(model: torch.nn.Module, val: ValData, layers: list[str], target: int | None, batch_size: int) -> Scan:
    """Predict every val image; with masks, also Grad-CAM and score every image's map."""
    loader = DataLoader(val.dataset, batch_size=batch_size, num_workers=val.num_workers)
    if val.masks is None:
        out = predict(model, loader)
        return Scan(out["true"], out["pred"], out["prob"])
    device = next(model.parameters()).device
    trues, probs, scores, start = [], [], {"energy": [], "pointing": [], "empty": []}, 0
    with GradCAM(model, layers) as cam:
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device)
            out = cam(x, _targets(target, y))
            masks = val.masks[start:start + len(y)]  # (B, H, W)
            maps = out.maps.cpu().numpy()  # (B, H, W)
            for k, v in {**localization_scores(maps, masks), "empty": empty_maps(maps)}.items():
                scores[k].append(v)
            trues.append(y.cpu())
            probs.append(out.logits.float().softmax(1).cpu())
            start += len(y)
    prob = torch.cat(probs).numpy()
    return Scan(torch.cat(trues).numpy(), prob.argmax(1), prob, {k: np.concatenate(v) for k, v in scores.items()})


def cam_maps(model: torch.nn.Module, val: ValData, indices: np.ndarray, layers: list[str], target: int | None,
             batch_size: int) -> np.ndarray:
    """Grad-CAM maps of the val images at `indices`. (M, H, W) float32 in [0, 1]."""
    loader = DataLoader(Subset(val.dataset, indices.tolist()), batch_size=batch_size, num_workers=val.num_workers)
    device = next(model.parameters()).device
    maps = []
    with GradCAM(model, layers) as cam:
        for batch in loader:
            maps.append(cam(batch[0].to(device), _targets(target, batch[1].to(device))).maps.cpu())
    return torch.cat(maps).numpy() if maps else np.zeros((0, 0, 0), np.float32)


def pick_examples(s: Scan, class_ids: list[int], k: int, seed: int) -> dict[int, dict[str, list[int]]]:
    """Per class, up to k random correctly and k wrongly classified val indices (sorted)."""
    rng = np.random.default_rng(seed)
    picks = {}
    for c in class_ids:
        of_class = s.true == c
        picks[c] = {kind: sorted(int(i) for i in rng.permutation(np.flatnonzero(of_class & want))[:k])
                    for kind, want in (("correct", s.correct), ("wrong", ~s.correct))}
    return picks


def shortfalls(picks: dict[int, dict[str, list[int]]], classes: list[str], k: int) -> list[str]:
    """One sentence per class with fewer than k correct or wrong images."""
    return [f"{classes[c]}: {_count(len(p[kind]))} {kind}ly classified validation image(s), of {k} asked for"
            for c, p in picks.items() for kind in ("correct", "wrong") if len(p[kind]) < k]


def _count(n: int) -> str:
    return f"only {n}" if n else "no"


# --- localisation summaries ------------------------------------------------------------------------------------

METHODS = ("gradcam", "uniform", "gaussian")


def localisation_rows(s: Scan, baselines: dict, classes: list[str]) -> list[dict]:
    """Mean scores of Grad-CAM and both baselines over groups of images: all / correct / wrong,
    overall and per class. One row per group: {"class", "prediction", "n", "<method> <score>"...}."""
    per_method = {"gradcam": s.scores, **baselines}
    groups = [("all", "all", np.ones_like(s.correct)), ("all", "correct", s.correct), ("all", "wrong", ~s.correct)]
    for c, name in enumerate(classes):
        groups += [(name, kind, (s.true == c) & want) for kind, want in (("correct", s.correct), ("wrong", ~s.correct))]
    rows = []
    for cls, kind, sel in groups:
        row = {"class": cls, "prediction": kind, "n": int(sel.sum())}
        for score in ("energy", "pointing"):
            for m in METHODS:
                row[f"{m} {score}"] = float(per_method[m][score][sel].mean()) if sel.any() else float("nan")
        rows.append(row)
    return rows


def localisation_tests(s: Scan, baselines: dict) -> list[dict]:
    """Differences of mean scores with 95% intervals: correct vs wrong (Welch), also of the energy
    divided by the object's area share (the uniform map's energy), which takes object size out;
    and Grad-CAM vs each baseline on the correct images (paired: the same images)."""
    g, ok = s.scores, s.correct
    lift = g["energy"] / np.maximum(baselines["uniform"]["energy"], 1e-9)  # (N,)
    rows = []
    for score, values in (("energy", g["energy"]), ("energy / area", lift), ("pointing", g["pointing"])):
        diff, low, high = difference_interval(values[ok], values[~ok])
        rows.append({"comparison": "correct - wrong", "score": score, "difference": diff, "low": low, "high": high})
    for score in ("energy", "pointing"):
        for m in ("uniform", "gaussian"):
            mean, half = mean_and_halfwidth(g[score][ok] - baselines[m][score][ok])
            rows.append({"comparison": f"gradcam - {m} (correct)", "score": score, "difference": mean,
                         "low": mean - half, "high": mean + half})
    return rows


def headline(rows: list[dict]) -> dict[str, float]:
    """Flat `loc/<prediction>/<method>_<score>` keys of the overall rows."""
    out = {}
    for row in rows:
        if row["class"] == "all":
            for m in METHODS:
                for score in ("energy", "pointing"):
                    name = score if m == "gradcam" else f"{m}_{score}"
                    out[f"loc/{row['prediction']}/{name}"] = row[f"{m} {score}"]
    return out


# --- the run --------------------------------------------------------------------------------------


def _source(cfg: Config) -> tuple[list[Classifier], str]:
    if not cfg.model.run:
        raise UsageError("model.run is empty: give a resnet-norms run or sweep directory")
    classifiers, is_sweep = find_classifiers(cfg.model.run)
    return classifiers, "sweep, variant with the best val accuracy" if is_sweep else "given run"


@dataclass
class Explained:
    """A loaded classifier with its Grad-CAM settings and its scan of the val split."""

    classifier: Classifier
    model: torch.nn.Module
    layers: list[str]
    target: int | None
    scan: Scan

    def maps(self, val: ValData, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """(M, H, W) uint8 maps of the val images at `indices` (for the report)."""
        return _quantise(cam_maps(self.model, val, indices, self.layers, self.target, batch_size))


def explain(c: Classifier, val: ValData, cfg: Config, device: torch.device) -> Explained:
    model = c.load(device)
    layers, target = layers_for(model, cfg), target_class(cfg.explain.target, c.classes)
    return Explained(c, model, layers, target, scan(model, val, layers, target, cfg.explain.batch_size))


def _flat(picks: dict[int, dict[str, list[int]]]) -> np.ndarray:
    """Per class, its correct then its wrong picks. (M,) int."""
    return np.array([i for p in picks.values() for kind in ("correct", "wrong") for i in p[kind]], dtype=np.int64)


def _chosen(e: Explained, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions and confidences of the chosen images."""
    pred = e.scan.pred[indices]
    return {"pred": pred, "conf": e.scan.prob[indices, pred]}


def run(cfg: Config, run: Run) -> dict:
    seed_everything(cfg.seed)
    classifiers, how = _source(cfg)
    best = best_classifier(classifiers)
    device = make_accelerator(run.device).device
    val = load_val(data_config(best.config.data, cfg))
    class_ids, k, bs = match_classes(cfg.explain.classes, best.classes), cfg.explain.per_class, cfg.explain.batch_size
    main = explain(best, val, cfg, device)
    picks = pick_examples(main.scan, class_ids, k, cfg.seed)
    indices = _flat(picks)
    arrays = {"indices": indices, "images": val.display(indices), "maps": main.maps(val, indices, bs),
              "true": main.scan.true[indices], **_chosen(main, indices)}
    names = best.classes
    summary = {
        "explained_run": str(best.path), "explained_from": how, "variant": best.label, "dataset": best.config.data.name,
        "classes": names, "chosen_classes": [names[c] for c in class_ids], "layers": main.layers,
        "target": cfg.explain.target, "per_class": k, "shortfalls": shortfalls(picks, names, k),
        "picks": {names[c]: p for c, p in picks.items()}, "val/accuracy": float(main.scan.correct.mean()),
        "has_masks": val.masks is not None,
    }
    baselines = baseline_scores(val.masks, cfg.explain.gaussian_sigma) if val.masks is not None else None
    if baselines:
        summary["localisation"] = localisation_rows(main.scan, baselines, names)
        summary["localisation_tests"] = localisation_tests(main.scan, baselines)
        summary["empty_maps"] = int(main.scan.scores["empty"].sum())
        summary.update(headline(summary["localisation"]))
    if len(classifiers) > 1:
        same_data = [c for c in classifiers if c.config.data == best.config.data]
        summary["variants_skipped"] = [c.label for c in classifiers if c not in same_data]  # other images
        summary["variants"] = compare_variants(same_data, main, val, cfg, indices, baselines, arrays)
    np.savez_compressed(run.path / EXPLANATIONS, **arrays)
    run.save_summary(summary)
    return summary


def compare_variants(classifiers: list[Classifier], main: Explained, val: ValData, cfg: Config, indices: np.ndarray,
                     baselines: dict | None, arrays: dict) -> list[dict]:
    """Every sweep variant on the same images: accuracy, localisation, and its maps (into `arrays`)."""
    device, rows = next(main.model.parameters()).device, []
    for i, c in enumerate(classifiers):
        e = main if c is main.classifier else explain(c, val, cfg, device)
        arrays[f"variant{i}_maps"] = e.maps(val, indices, cfg.explain.batch_size)
        arrays.update({f"variant{i}_{k}": v for k, v in _chosen(e, indices).items()})
        row = {"variant": c.label, "run": str(c.path), "val/accuracy": float(e.scan.correct.mean())}
        if baselines:
            row.update(headline(localisation_rows(e.scan, baselines, c.classes)[:3]))
            row["empty_maps"] = int(e.scan.scores["empty"].sum())
            row["vs_best"] = paired_difference(e.scan, main.scan)
        rows.append(row)
    return rows


def paired_difference(s: Scan, best: Scan) -> dict[str, list[float]]:
    """Mean score minus the best variant's on the same (all) val images, with its 95% interval."""
    out = {}
    for score in ("energy", "pointing"):
        mean, half = mean_and_halfwidth(s.scores[score] - best.scores[score])
        out[score] = [mean, mean - half, mean + half]
    return out


def _quantise(maps: np.ndarray) -> np.ndarray:
    """Maps in [0, 1] as uint8 for the report (display only; scores use the float maps)."""
    return (np.clip(maps, 0, 1) * 255).round().astype(np.uint8)



register(Experiment(
    name="gradcam",
    title="Grad-CAM on a trained resnet-norms classifier: overlays and measured localisation",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    check=check,
    reuses={"model.run": UPSTREAM},  # the runner hands over a resnet-norms run or sweep (trains one if none)
    key_figure="localisation",
    budget_s=25,  # quick, measured in `run all` (one thread, beside another job)
    headline=["val/accuracy", "loc/correct/energy", "loc/correct/pointing", "loc/correct/uniform_energy",
              "loc/correct/gaussian_energy", "loc/wrong/energy"],
))
