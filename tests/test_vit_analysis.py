"""vit-analysis end to end: the smoke run (and its exact resume), the transformers path on
stand-in data, and the one-line errors for missing data and weights."""

import json

import numpy as np
import pytest
import torch

from syllabus.cli import main

SMALL_HF = ["model.kind=hf", "model.pretrained=false", "data.name=fake", "data.image_size=32",
            "model.patch_size=8", "model.dim=32", "model.depth=2", "model.heads=2", "data.n_train=32",
            "data.n_val=16", "data.n_test=20", "train.epochs=1", "train.batch_size=16", "analysis.n_images=20",
            "analysis.probe_train=20", "analysis.ratios=0,1"]


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_smoke_run_measures_what_the_issue_asks_and_resumes_exactly(exact_resume):
    whole, _ = exact_resume("vit-analysis", ignore=("time_per_epoch",))
    s = _summary(whole)
    n_classes, depth = 12, 2
    m = s["masking"]
    assert m["ratios"] == [0.0, 0.5, 1.0]
    unmasked = m["random"]["zero"][0][0]
    for how in ("zero", "mean", "drop"):
        assert m["random"][how][0][0] == unmasked  # masking nothing changes nothing, whatever the fill
        assert m["random"][how][0][-1] == pytest.approx(1 / n_classes)  # all masked: one class for all (balanced)
        assert m["ranked"][how]["most"][-1] == pytest.approx(1 / n_classes)
    assert m["patterns"]["share"]["left"] == 0.5 and set(m["patterns"]["accuracy"]["drop"]) >= {"centre", "border"}
    p = s["probes"]
    assert len(p["cls"]) == len(p["mean"]) == depth + 1
    assert p["cls"][0] == pytest.approx(1 / n_classes)  # the CLS token before any block is one constant vector
    loc = s["localisation"]
    assert 0.1 < loc["uniform"]["energy"]["mean"] < 0.6  # the shapes' mean object area
    assert loc["uniform"]["energy"]["mean"] == pytest.approx(loc["uniform"]["pointing"]["mean"])
    assert {"rollout", "last_layer", "head_0", "head_1"} <= set(loc)
    assert s["test/accuracy"] == s["test"]["accuracy"] and len(s["test"]["confusion"]) == n_classes
    with np.load(whole / "analysis.npz") as f:
        assert f["heads"].shape == (4, 2, 8, 8) and f["rollout"].shape == (4, 8, 8) and f["masks"].shape == (4, 32, 32)
        np.testing.assert_allclose(f["top_prob"].sum(1) <= 1 + 1e-6, True)
        assert (np.diff(f["top_prob"], axis=1) <= 0).all()
    assert (whole / "plots" / "attention_overlays.png").stat().st_size > 10_000
    assert "Attention inside the object" in (whole / "report.html").read_text()


def test_missing_weights_and_data_are_one_line_errors(tmp_path, capsys):
    base = ["run", "vit-analysis", "--profile", "smoke", "--out", str(tmp_path)]
    assert main([*base, "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'none'}"]) == 2
    assert "data.download=true" in capsys.readouterr().err
    assert main([*base, *sum((["--set", s] for s in SMALL_HF if "pretrained" not in s), []),
                 "--set", f"model.name={tmp_path / 'no-weights'}"]) == 2
    err = capsys.readouterr().err
    assert "model.download=true" in err and "Traceback" not in err
    assert main([*base, "--set", "analysis.fills=zero,blur"]) == 2
    assert "blur" in capsys.readouterr().err


@pytest.mark.slow
def test_full_profile_runs_the_real_vit_b16_architecture_from_a_weights_folder(tmp_path):
    """`--profile full` (ViT-B/16 at 224 px, a new 10-class head on weights loaded from a folder)
    with random weights of the real architecture, a tiny stand-in dataset and, on this CPU, fp32
    (the profile's bf16 autocast is a GPU setting: it makes CPU matmuls about 4x slower)."""
    from transformers import ViTConfig, ViTForImageClassification

    from syllabus.experiments.vit_analysis import full

    m = full().model
    b16 = ViTConfig()  # transformers' defaults are ViT-B/16 at 224 px, the architecture of m.name
    assert (m.dim, m.depth, m.heads, m.patch_size, int(m.dim * m.mlp_ratio)) == (
        b16.hidden_size, b16.num_hidden_layers, b16.num_attention_heads, b16.patch_size, b16.intermediate_size)
    torch.manual_seed(0)
    weights = tmp_path / "vit-b16"
    ViTForImageClassification(ViTConfig(num_labels=1000)).save_pretrained(weights)  # an ImageNet head, replaced
    out = tmp_path / "runs"
    sets = [f"model.name={weights}", "data.name=fake", "data.n_train=4", "data.n_val=2", "data.n_test=2",
            "data.num_workers=0", "train.epochs=1", "train.batch_size=2", "train.precision=no", "analysis.n_images=2",
            "analysis.grid=2", "analysis.ratios=0,1", "analysis.seeds=1", "analysis.fills=drop",
            "analysis.probe_train=2", "analysis.probe_iter=20", "analysis.batch_size=2"]
    args = ["run", "vit-analysis", "--profile", "full", "--device", "cpu", "--out", str(out)]
    assert main(args + sum((["--set", s] for s in sets), [])) == 0
    run_dir = next((out / "vit-analysis").iterdir())
    s = _summary(run_dir)
    assert s["epochs_run"] == 1 and s["classes"][:2] == ["class 0", "class 1"] and len(s["classes"]) == 10
    assert len(s["probes"]["cls"]) == b16.num_hidden_layers + 1 and "localisation" not in s  # FakeData: no masks
    assert s["masking"]["random"]["drop"][0][0] == s["test/accuracy"]  # nothing masked, the same 2 test images
    with np.load(run_dir / "analysis.npz") as f:
        assert f["heads"].shape[1:] == (12, 14, 14) and f["rollout"].shape[1:] == (14, 14)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["model"]["kind"] == "hf" and config["data"]["image_size"] == 224
    assert full().train.precision == "bf16"
