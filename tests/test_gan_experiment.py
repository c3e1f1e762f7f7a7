"""The `gan` experiment: scenario and mitigation settings, sample measures, CLI runs and bad input."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from syllabus.cli import main
from syllabus.config import apply_overrides
from syllabus.experiments.gan import gan_subset, quick
from syllabus.experiments.gan_settings import mitigations_on, resolve
from syllabus.metrics.gan_samples import class_histogram, classes_covered, kl_to_uniform
from syllabus.runs import load_checkpoint


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


def test_remedy_is_each_scenario_own_mitigation():
    remedies = {sc: mitigations_on(_settings(gan__scenario=sc, gan__mitigation="remedy"))
                for sc in ("baseline", "vanishing", "collapse", "overfit")}
    assert remedies == {"baseline": ["non_saturating"], "vanishing": ["non_saturating"],
                        "collapse": ["non_saturating", "minibatch_std"], "overfit": ["non_saturating", "diffaug"]}


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
    hist = class_histogram(np.array([0, 0, 1, 3]), 4)
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
    (["--set", "data.train_fraction=0"], "bad value 0.0 for data.train_fraction: must be > 0 and <= 1"),
    (["--set", "train.steps_per_epoch=0"], "bad value 0 for train.steps_per_epoch: must be >= 1"),
    (["--set", "train.lr_d=-1"], "bad value -1.0 for train.lr_d: must be > 0"),
    (["--set", "train.lr_g=nan"], "bad value nan for train.lr_g: must be > 0"),
    (["--set", "train.d_steps=0"], "bad value 0 for train.d_steps: must be >= 1"),
    (["--set", "gan.label_smoothing=1"], "bad value 1.0 for gan.label_smoothing: must be >= 0 and < 1"),
    (["--set", "train.lr=0.01"], "train.lr is not a GAN setting: D and G have their own, train.lr_d and train.lr_g"),
    (["--set", "train.optimizer=sgd"], "bad value 'sgd' for train.optimizer; choices: adam"),
    (["--set", "train.monitor=val/accuracy"], "train.monitor 'val/accuracy' is not a metric of gan"),
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


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_smoke_run_measures_reports_resumes_exactly_and_compares(exact_resume, tmp_path):
    run_dir, cut = exact_resume("gan", after=3)  # the classifier's two epochs, then the GAN's first
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["scenario"] == "baseline" and s["mitigations"] == ["non_saturating"] and s["steps"] == 30
    assert s["n_gan_train"] == 1257 and s["params"] == s["params_g"] + s["params_d"]
    # the logged measures are those of the saved samples' class histogram
    hist = np.array(s["class_hist"])
    assert hist.sum() == pytest.approx(1.0) and s["kl_uniform"] == pytest.approx(kl_to_uniform(hist))
    assert s["classes_covered"] == classes_covered(hist, 0.02)
    assert s["classifier_accuracy"] > 0.15  # above chance (0.1) after six Adam steps
    assert s["frechet_real"] < s["frechet"]  # real digits are closer to held-out digits than 30-step samples
    rows = _rows(run_dir)
    assert [r["step"] for r in rows if "step" in r] == list(range(1, 31))  # every step logged
    epochs = [r for r in rows if "step" not in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and s["frechet"] == epochs[-1]["val/frechet"]
    assert s["g_grad_norm"] == pytest.approx(np.mean([r["train/g_grad_norm"] for r in rows if r.get("epoch") == 2
                                                      and "step" in r]))
    grids = [load_checkpoint(run_dir / "checkpoints" / f"samples-000{e}.pt") for e in (1, 2)]
    assert [g["step"] for g in grids] == [15, 30] and grids[1]["samples"].shape == (8, 1, 8, 8)
    assert grids[0]["samples"].abs().max() <= 1 and not torch.equal(grids[0]["samples"], grids[1]["samples"])
    html = (run_dir / "report.html").read_text()
    assert "not Inception FID" in html and "Samples over training (the same noise every time)" in html
    assert "Settings in force" in html

    sweep = tmp_path / "sweep"  # the comparison page over the two runs, as a sweep writes it
    sweep.mkdir()
    points = [{"label": k, "dir": str(d), "status": "ok"} for k, d in (("whole", run_dir), ("resumed", cut))]
    (sweep / "sweep.json").write_text(json.dumps({"experiment": "gan", "profile": "smoke", "points": points}))
    assert main(["report", str(sweep)]) == 0
    summary = json.loads((sweep / "summary.json").read_text())
    assert [p["run"] for p in summary["comparison"]] == ["whole", "resumed"] and summary["best"] == "whole"
    assert summary["comparison"][0]["Fréchet (clf)"] == s["frechet"] and summary["comparison"][0]["min classes"] \
        == min(r["val/classes_covered"] for r in epochs)
    html = (sweep / "report.html").read_text()
    assert "Every scenario and mitigation, the same measures" in html and (sweep / "plots" / "samples.png").is_file()


@pytest.fixture
def one_thread():
    """As `run` does (cfg.cpu_threads): a ResNet-8 on 8x8 digits trains fastest on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_classifier_is_trained_once_per_setting_and_shared(tmp_path, capsys, one_thread):
    from syllabus.experiments.gan import load_images, smoke, train_classifier
    from syllabus.runs import Run

    cfg = smoke()
    splits = load_images(cfg.data)
    first = train_classifier(splits, cfg, Run(tmp_path / "gan" / "a", "cpu"))
    (cache,) = (tmp_path / "gan" / "classifiers").iterdir()
    records = (cache / "metrics.jsonl").read_text()
    second = train_classifier(splits, cfg, Run(tmp_path / "gan" / "b", "cpu"))
    assert "finished; nothing to train" in capsys.readouterr().out
    assert (cache / "metrics.jsonl").read_text() == records and first[1] == second[1] > 0.15  # above chance
    for a, b in zip(first[0].state_dict().values(), second[0].state_dict().values()):
        assert torch.equal(a, b)
    other = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, epochs=1))
    train_classifier(splits, other, Run(tmp_path / "gan" / "c", "cpu"))
    assert len(list((tmp_path / "gan" / "classifiers").iterdir())) == 2  # another setting, another classifier


def test_short_labels_drop_what_every_point_shares():
    from syllabus.experiments.gan_report import short_labels

    assert short_labels(["scenario=a,mitigation=none,epochs=3", "scenario=b,mitigation=none,epochs=3",
                         "scenario=b,mitigation=remedy,epochs=3"]) == ["scenario=a,mitigation=none",
                                                                       "scenario=b,mitigation=none",
                                                                       "scenario=b,mitigation=remedy"]
    assert short_labels(["whole", "whole"]) == ["whole", "whole"] and short_labels(["x=1"]) == ["x=1"]


def test_default_sweep_is_the_three_failures_with_and_without_their_remedy():
    from syllabus.config import sweep_points
    from syllabus.experiments import get_experiment

    exp = get_experiment("gan")
    points = sweep_points(exp.config("quick"), exp.default_sweep)
    assert len(points) == 6
    settings = [resolve(apply_overrides(exp.config("quick"), p)) for p in points]
    assert [mitigations_on(s) for s in settings] == [[], ["non_saturating"], ["non_saturating"],
                                                     ["non_saturating", "minibatch_std"], ["non_saturating"],
                                                     ["non_saturating", "diffaug"]]
    assert {s.train.epochs * s.train.steps_per_epoch for s in settings} == {600}
