"""The `gradcam` experiment end to end (smoke profile) and its bad-input messages."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syllabus.cli import main
from syllabus.config import to_dict
from syllabus.data.images import ImageDataConfig, image_splits
from syllabus.data.shapes import SHAPE_CLASSES
from syllabus.experiments import resnet_norms as rn
from syllabus.experiments.gradcam import BIRD_CLASSES, match_classes
from syllabus.runs import Run, write_json
from syllabus.train.state import best_state


def _run(tmp_path, *sets):
    argv = ["run", "gradcam", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]
    for s in sets:
        argv += ["--set", s]
    return main(argv)


def _only_run(root):
    (run_dir,) = (root / "gradcam").iterdir()
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def fake_resnet_norms_run(path: Path, norm: str, val_accuracy: float, cfg=None, classes=SHAPE_CLASSES) -> Path:
    """The files gradcam reads from a resnet-norms run: config, summary, an (untrained) best.pt."""
    cfg = cfg or rn.smoke()
    cfg.model.norm = norm
    run = Run(path)
    run.save_config("resnet-norms", "smoke", to_dict(cfg))
    torch.manual_seed(0)
    model = rn.build_model(cfg, {"classes": list(classes)})
    run.save_checkpoint("best", best_state({"model": model}, 1, "val/accuracy", val_accuracy))
    run.save_summary({"classes": list(classes), "val/accuracy": val_accuracy})
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A resnet-norms sweep directory of three points: bn, gn (the best val accuracy), ln (failed)."""
    root = tmp_path_factory.mktemp("runs") / "resnet-norms"
    points = [("norm=bn", 0.3, "ok"), ("norm=gn", 0.6, "ok"), ("norm=ln", 0.9, "failed")]
    for label, acc, _ in points[:2]:
        fake_resnet_norms_run(root / f"s-{label}", label[5:], acc)
    entries = [{"label": label, "dir": f"moved/elsewhere/s-{label}", "status": status}  # found as siblings
               for label, _, status in points]
    write_json(root / "s-sweep" / "sweep.json", {"experiment": "resnet-norms", "profile": "smoke", "points": entries})
    return root / "s-sweep"


@pytest.mark.slow
def test_smoke_trains_a_classifier_first_then_explains_it(tmp_path):
    assert _run(tmp_path) == 0
    (trained,) = (tmp_path / "resnet-norms").iterdir()  # under the same --out root
    run_dir, summary = _only_run(tmp_path)
    assert summary["explained_run"] == str(trained) and summary["explained_from"] == "given run"
    assert summary["layers"] == ["stages.2.0.conv1", "stages.2.0.conv2"]  # n = 1: the 2n convs of stage 3
    assert summary["chosen_classes"] == ["circle", "square"]
    n_val = json.loads((trained / "config.json").read_text())["config"]["data"]["n_val"]
    overall = {r["prediction"]: r for r in summary["localisation"] if r["class"] == "all"}
    assert overall["all"]["n"] == n_val == overall["correct"]["n"] + overall["wrong"]["n"]
    data = json.loads((trained / "config.json").read_text())["config"]["data"]
    val = image_splits(ImageDataConfig(**data), with_masks=True).eval_splits["val"]
    area = np.mean([item[2].numpy().mean() for item in val])  # a uniform map's energy is the object's area share
    assert overall["all"]["uniform energy"] == pytest.approx(area) == pytest.approx(overall["all"]["uniform pointing"])
    # Grad-CAM of a barely trained net still beats ignoring the image less often than not: the scores
    # are means over the same images the counts name
    assert summary["loc/all/energy"] == pytest.approx(overall["all"]["gradcam energy"])
    with np.load(run_dir / "explanations.npz") as f:
        picked = sum(len(p["correct"]) + len(p["wrong"]) for p in summary["picks"].values())
        assert f["images"].shape == (picked, 32, 32, 3) and f["maps"].shape == (picked, 32, 32)
    picked_per_class = {c: len(p["correct"]) + len(p["wrong"]) for c, p in summary["picks"].items()}
    assert all(n <= 4 for n in picked_per_class.values())
    assert len(summary["shortfalls"]) == sum(2 - len(p[k]) > 0 for p in summary["picks"].values()
                                             for k in ("correct", "wrong"))
    html = (run_dir / "report.html").read_text()
    assert "Localisation (object masks known)" in html and "Observations" in html
    assert html.count("data:image/png;base64,") >= 2
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").exists()


def test_a_sweep_gives_its_best_variant_and_a_side_by_side(tmp_path, sweep):
    layers = "explain.layers=stages.1.0.conv2,stages.2.0"  # two resolutions: 16x16 and 8x8
    assert _run(tmp_path, f"model.run={sweep}", "explain.target=pred", layers) == 0
    run_dir, summary = _only_run(tmp_path)
    assert summary["layers"] == ["stages.1.0.conv2", "stages.2.0"] and summary["target"] == "pred"
    assert summary["variant"] == "norm=gn" and summary["explained_run"] == str(sweep.parent / "s-norm=gn")
    assert summary["explained_from"].startswith("sweep")
    assert [v["variant"] for v in summary["variants"]] == ["norm=bn", "norm=gn"]  # the failed point is skipped
    bn, gn = summary["variants"]
    assert gn["val/accuracy"] == summary["val/accuracy"]
    # a paired mean difference over the same images is the difference of the two means
    assert bn["vs_best"]["energy"][0] == pytest.approx(bn["loc/all/energy"] - gn["loc/all/energy"])
    low, high = bn["vs_best"]["pointing"][1:]
    assert low <= bn["loc/all/pointing"] - gn["loc/all/pointing"] <= high
    with np.load(run_dir / "explanations.npz") as f:
        assert f["variant0_maps"].shape == f["maps"].shape and not np.array_equal(f["variant0_maps"], f["maps"])
    assert "Normalisations side by side" in (run_dir / "report.html").read_text()


def test_a_sweep_of_gradcam_settings_writes_a_comparison(tmp_path, sweep):
    argv = ["run", "gradcam", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu",
            "--set", f"model.run={sweep.parent / 's-norm=bn'}", "--sweep", "explain.target=true,pred"]
    assert main(argv) == 0
    (sweep_dir,) = (tmp_path / "gradcam").glob("*-sweep")
    rows = json.loads((sweep_dir / "summary.json").read_text())["points"]
    assert [r["run"] for r in rows] == ["target=true", "target=pred"]
    assert rows[0]["val/accuracy"] == rows[1]["val/accuracy"]  # the same classifier
    assert "report of target=pred" in (sweep_dir / "report.html").read_text()


@pytest.mark.parametrize("sets,expected", [
    (["model.run=/nonexistent/run"], "model.run: no such run directory: /nonexistent/run"),
    (["explain.classes=Cattle Egret"], "explain.classes: 'Cattle Egret' not in the dataset; its classes: circle, "),
    (["explain.target=dodo"], "explain.target='dodo': expected true, pred or a class name (circle, "),
    (["explain.per_class=0"], "explain.per_class: must be >= 1"),
])
def test_bad_input_is_one_line_before_anything_runs(capsys, tmp_path, sets, expected):
    assert _run(tmp_path, *sets) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_bad_layer_lists_the_layer_names(capsys, tmp_path, sweep):
    assert _run(tmp_path, f"model.run={sweep}", "explain.layers=stages.9.0.conv1") == 2
    assert "explain.layers: unknown layer 'stages.9.0.conv1'; did you mean stages.2.0.conv1, " in \
        capsys.readouterr().err
    assert _run(tmp_path, f"model.run={sweep}", "explain.layers=nope") == 2
    err = capsys.readouterr().err
    assert "the model's layers: stem, stem.0, stem.1, stem.2, stages, stages.0, stages.0.0, stages.0.0.conv1" in err


def test_a_run_of_another_experiment_is_refused(capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "vae", "profile": "smoke", "config": {}}))
    assert _run(tmp_path / "out", f"model.run={other}") == 2
    assert "is a 'vae' run, not a resnet-norms run" in capsys.readouterr().err


def test_full_profile_without_the_birds_says_where_to_put_them(capsys, tmp_path):
    assert main(["run", "gradcam", "--profile", "full", "--out", str(tmp_path)]) == 2
    assert "data.root" in capsys.readouterr().err


def test_full_profile_on_a_tiny_birds_folder(tmp_path):
    """The full profile's path: the seven species found among hyphenated folders, no masks."""
    folders = sorted(["Sarus-Crane", *(n.replace(" ", "-") for n in BIRD_CLASSES)])
    rng = np.random.default_rng(0)
    for split, count in (("train", 1), ("val", 2), ("test", 1)):
        for name in folders:
            (tmp_path / "birds" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "birds" / split / name / f"{i}.jpg")
    cfg = rn.full()
    cfg.data.image_size, cfg.data.num_workers = 32, 0
    run = fake_resnet_norms_run(tmp_path / "rn", "bn", 0.5, cfg, folders)
    assert main(["run", "gradcam", "--profile", "full", "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--set", f"model.run={run}", "--set", f"data.root={tmp_path / 'birds'}"]) == 0
    run_dir, summary = _only_run(tmp_path / "out")
    assert summary["chosen_classes"] == [n.replace(" ", "-") for n in BIRD_CLASSES]
    assert not summary["has_masks"] and "localisation" not in summary
    with np.load(run_dir / "explanations.npz") as f:
        assert f["images"].shape == (14, 32, 32, 3) and f["images"].dtype == np.uint8
        assert f["maps"].shape == (14, 32, 32)
    assert "not scored" in (run_dir / "report.html").read_text()


def test_class_names_match_hyphenated_folders():
    folders = sorted(["Asian-Green-Bee-Eater", *(n.replace(" ", "-") for n in BIRD_CLASSES), "Sarus-Crane"])
    assert [folders[i] for i in match_classes(BIRD_CLASSES, folders)] == [n.replace(" ", "-") for n in BIRD_CLASSES]
    assert match_classes(("cattle_egret", "RUDDY shelduck"), folders) == [1, 5]

