"""The `gan` experiment: scenario and mitigation settings, sample measures, CLI runs and bad input."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from syllabus.cli import main
from syllabus.config import apply_overrides
from syllabus.experiments.gan import (
    class_histogram,
    classes_covered,
    gan_subset,
    kl_to_uniform,
    mitigations_on,
    quick,
    resolve,
)


def _settings(**overrides):
    return resolve(apply_overrides(quick(), {k.replace("__", "."): v for k, v in overrides.items()}))


def test_baseline_is_the_profile_with_the_non_saturating_loss():
    cfg = quick()
    s = resolve(cfg)
    assert s.train == cfg.train and s.d_width == cfg.model.d_width and s.train_fraction == 1.0
    assert s.objective.non_saturating and mitigations_on(s) == ["non_saturating"]


def test_scenarios_scale_the_profile_settings():
    base = quick()
    v = _settings(gan__scenario="vanishing")
    assert not v.objective.non_saturating and mitigations_on(v) == []
    assert v.train.d_steps == 4 * base.train.d_steps and v.d_width == 2 * base.model.d_width
    c = _settings(gan__scenario="collapse", train__lr_g="0.002")
    assert c.train.g_steps == 4 and c.train.lr_g == pytest.approx(0.006)
    o = _settings(gan__scenario="overfit", data__train_fraction="0.5")
    assert o.train_fraction == pytest.approx(0.025) and o.d_width == 2 * base.model.d_width


def test_mitigations_switch_on_by_field_or_by_name():
    assert _settings(gan__scenario="vanishing", gan__non_saturating="true").objective.non_saturating
    assert _settings(gan__scenario="vanishing", gan__mitigation="non_saturating").objective.non_saturating
    assert mitigations_on(_settings(gan__mitigation="minibatch_std")) == ["non_saturating", "minibatch_std"]
    assert _settings(gan__mitigation="label_smoothing").objective.label_smoothing == 0.1
    kept = _settings(gan__mitigation="label_smoothing", gan__label_smoothing="0.25")
    assert kept.objective.label_smoothing == 0.25  # an explicit strength wins over the named default
    both = _settings(gan__diffaug="true", gan__spectral_norm="true", gan__instance_noise="0.2")
    assert mitigations_on(both) == ["non_saturating", "instance_noise", "spectral_norm", "diffaug"]


def test_class_histogram_coverage_and_kl_to_uniform():
    hist = class_histogram(np.array([0, 0, 1, 3]), num_classes=4)
    np.testing.assert_allclose(hist, [0.5, 0.25, 0.0, 0.25])
    assert classes_covered(hist, 0.25) == 3 and classes_covered(hist, 0.3) == 1
    assert kl_to_uniform(hist) == pytest.approx(0.5 * math.log(2))  # 0.5 log(4 * 0.5) + 2 * 0.25 log(1)
    assert kl_to_uniform(np.full(10, 0.1)) == pytest.approx(0.0)
    assert kl_to_uniform(np.eye(10)[3]) == pytest.approx(math.log(10))
    assert kl_to_uniform(np.array([0.5, 0.5] + [0.0] * 8)) == pytest.approx(math.log(5))


def test_gan_subset_is_a_fixed_fraction():
    images = torch.arange(40)
    a = gan_subset(images, 0.1, seed=3)
    assert len(a) == 4 and len(set(a.tolist())) == 4 and torch.equal(a, gan_subset(images, 0.1, seed=3))
    assert len(gan_subset(images, 0.001, seed=3)) == 1


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv,expected", [
    (["--profile", "full"], "MNIST not found under"),
    (["--set", "gan.scenario=chaos"], "choices: baseline, vanishing, collapse, overfit"),
    (["--sweep", "gan.mitigation=none,magic"], "bad value 'magic' for gan.mitigation; choices: none, non_saturating"),
    (["--set", "gan.non_saturating=maybe"], "bad value 'maybe' for gan.non_saturating: expected bool or NoneType"),
    (["--set", "model.arch=conv", "--set", "data.image_size=10"], "data.image_size=10: model.arch=conv needs"),
    (["--set", "data.train_fraction=0"], "data.train_fraction=0.0: expected a share in (0, 1]"),
    (["--set", "train.steps=0"], "must be at least 1"),
])
def test_bad_input_is_one_line_before_anything_runs(capsys, tmp_path, argv, expected):
    code = main(["run", "gan", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_missing_mnist_message_names_the_fix(capsys, tmp_path):
    assert main(["run", "gan", "--profile", "full", "--out", str(tmp_path), "--set", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "syllabus data prepare mnist --download" in err and "--set data.root=" in err


def test_smoke_run_writes_run_directory_and_resumes(tmp_path, capsys):
    assert main(["run", "gan", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu"]) == 0
    (run_dir,) = (tmp_path / "gan").iterdir()
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.html", "checkpoints/last.pt",
                 "checkpoints/samples-0000030.pt", "classifier/checkpoints/best.pt", "plots/grad_norms.png",
                 "plots/samples.png", "plots/collapse.png"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["classes_covered"] <= 10 and 0 <= summary["kl_uniform"] <= math.log(10) + 1e-9
    assert summary["frechet"] >= 0 and summary["frechet_real"] >= 0 and 0 <= summary["classifier_accuracy"] <= 1
    assert summary["scenario"] == "baseline" and summary["mitigations"] == ["non_saturating"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "g_loss" in r] == list(range(1, 31))
    assert [r["step"] for r in rows if "frechet" in r] == [15, 30]
    html = (run_dir / "report.html").read_text()
    assert "not Inception FID" in html and html.count("data:image/png;base64,") >= 7

    assert main(["run", "--resume", str(run_dir), "--set", "train.steps=45", "--device", "cpu"]) == 0
    assert "resuming" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "frechet" in r] == [15, 30, 45]
    assert [r["step"] for r in rows if "g_loss" in r] == list(range(1, 46))


def test_smoke_sweep_compares_scenarios_in_one_table(tmp_path):
    argv = ["run", "gan", "--profile", "smoke", "--out", str(tmp_path), "--device", "cpu",
            "--sweep", "gan.scenario=vanishing,overfit", "--sweep", "gan.mitigation=diffaug",
            "--set", "train.steps=10", "--set", "train.eval_every=5"]
    assert main(argv) == 0
    (sweep,) = [p for p in (tmp_path / "gan").iterdir() if p.name.endswith("sweep")]
    summary = json.loads((sweep / "summary.json").read_text())
    points = summary["points"]
    assert [p["run"] for p in points] == ["scenario=vanishing,mitigation=diffaug",
                                          "scenario=overfit,mitigation=diffaug"]
    assert [p["mitigations"] for p in points] == ["diffaug", "non_saturating, diffaug"]
    for key in ("classes covered", "KL to uniform", "Fréchet (clf)", "G grad norm", "D gap train-heldout"):
        assert all(key in p for p in points)
    html = (sweep / "report.html").read_text()
    assert "Fréchet" in html and html.count("data:image/png;base64,") >= 4


def test_settings_dataclass_is_recorded_flat():
    s = _settings(gan__scenario="overfit")
    flat = s.flat()
    assert flat["train_fraction"] == pytest.approx(0.05) and flat["d_width"] == 256
    assert set(dataclasses.asdict(s.objective)) <= set(flat)
