"""The `clip` experiment end to end: a smoke CLI run, exact resume, the full path on stand-in images, bad input."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from syllabus.cli import main
from syllabus.errors import UsageError
from syllabus.experiments import clip_data
from syllabus.experiments.clip import ModelConfig


def _only_run(out):
    (run_dir,) = [p for p in (out / "clip").iterdir() if p.is_dir()]
    return run_dir


def _section(html: str, heading: str) -> str:
    match = re.search(rf"<h2[^>]*>{re.escape(heading)}.*?</h2>(.*?)(<h2|$)", html, re.S)
    assert match is not None, heading
    return match.group(1)


def _check_studies(summary: dict, num_classes: int, n_test: int) -> None:
    zs = summary["zero_shot"]
    assert set(zs["strategies"]) == {"bare", "photo", "descriptive", "ensemble"}
    best = zs["strategies"][zs["best"]]["accuracy"]
    assert best == max(v["accuracy"] for v in zs["strategies"].values()) == summary["test/accuracy"]
    cm = np.asarray(zs["confusion"])
    assert cm.shape == (num_classes, num_classes) and cm.sum() == n_test
    assert np.trace(cm) / n_test == pytest.approx(best)
    rows = summary["alignment"]
    assert [(r["map"], r["fraction"]) for r in rows] == [("none", 0.0)] + [
        (m, f) for f in (0.01, 0.1, 1.0) for m in ("mean shift", "procrustes")]
    assert rows[0]["gap"] == pytest.approx(summary["gap"]) and summary["gap"] > 0.05
    full = {r["map"]: r for r in rows if r["fraction"] == 1.0}
    # both maps move the test images to the text centroid, so they close most of the gap
    assert full["mean shift"]["gap"] < 0.5 * summary["gap"] and full["procrustes"]["gap"] < 0.5 * summary["gap"]
    shift = {r["lambda"]: r for r in summary["shift"]}
    assert shift[0.0]["gap"] == pytest.approx(summary["gap"]) and shift[1.0]["gap"] < shift[0.0]["gap"]


@pytest.mark.slow
def test_smoke_cli_run_writes_every_study_and_resumes_exactly(exact_resume):
    """One smoke CLI run checked for its studies, and the same run cut after epoch 1 and resumed."""
    run_dir, _ = exact_resume("clip", ["train.epochs=2"])
    summary = json.loads((run_dir / "summary.json").read_text())
    n_test = summary["data_info"]["sizes"]["test"]
    _check_studies(summary, 12, n_test)
    held = {r["images"]: r for r in summary["holdout"]}
    assert held["held-out combination"]["n"] == summary["data_info"]["holdout_images"] > 0
    assert held["seen test images"]["n"] == n_test
    html = (run_dir / "report.html").read_text()
    for heading in ("Zero-shot accuracy by prompting strategy", "The modality gap", "Shifting the modalities"):
        assert "data:image/png;base64," in _section(html, heading)
    assert "<table>" in _section(html, "Orthogonal Procrustes alignment against the mean shift")
    assert "0.9713" in _section(html, "Zero-shot accuracy by prompting strategy")
    with np.load(run_dir / "views.npz") as views:
        assert views["tsne_image"].shape == views["pca_text"].shape == (20, 2)


def _write_folder(root, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(90 + 80 * k, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


@pytest.mark.slow
def test_full_path_with_random_vit_b_32_on_stand_in_images(tmp_path):
    """The full profile's code (open_clip ViT-B-32, prompts, every study) on six stand-in images, no download."""
    _write_folder(tmp_path / "images")
    args = ["run", "clip", "--profile", "full", "--device", "cpu", "--out", str(tmp_path / "runs"),
            "--set", "data.name=folder", "--set", f"data.root={tmp_path / 'images'}", "--set", "data.num_workers=0",
            "--set", "model.pretrained=none", "--set", "model.batch_size=6", "--set", "analysis.view_points=6"]
    assert main(args) == 0
    summary = json.loads((_only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["model_kind"] == "open_clip" and summary["classes"] == ["cat", "dog"]
    assert summary["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial temperature
    _check_studies(summary, 2, 6)
    assert "holdout" not in summary


def test_missing_stl10_or_folder_names_the_keys_to_set(tmp_path):
    with pytest.raises(UsageError, match="data.download=true"):
        clip_data.check_data(clip_data.DataConfig(name="stl10", root=str(tmp_path)))
    with pytest.raises(UsageError, match="train or test"):
        clip_data.check_data(clip_data.DataConfig(name="folder", root=str(tmp_path)))


@pytest.mark.slow  # imports open_clip (several seconds)
def test_missing_weights_name_the_keys_to_set(monkeypatch):
    monkeypatch.setattr(clip_data, "_cached_weights", lambda cfg: None)
    with pytest.raises(UsageError, match="model.download=true"):
        clip_data.resolve_weights(ModelConfig(kind="open_clip"))
    with pytest.raises(UsageError, match="no weights 'nonsense'"):
        clip_data.resolve_weights(ModelConfig(kind="open_clip", pretrained="nonsense"))
    assert clip_data.resolve_weights(ModelConfig(kind="open_clip", pretrained="none")) == (None, False)


def test_bad_holdout_is_one_line():
    with pytest.raises(UsageError, match="'<colour> <shape>'"):
        clip_data.parse_holdout("mauve star")
    assert clip_data.parse_holdout("") is None
    assert clip_data.parse_holdout("red ring") == ("red", "ring")
