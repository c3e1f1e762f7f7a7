"""The `slot-attention` experiment end to end: smoke CLI run, exact resume, summary and report contents."""

import json
import math
import re

import numpy as np
import pytest
import torch

from syllabus.cli import main
from syllabus.experiments import get_experiment
from syllabus.experiments.slot_attention import build_model
from syllabus.experiments.slot_attention_report import colour_ids, colour_weights


def _section(html: str, heading: str) -> str:
    match = re.search(rf"<h2[^>]*>{re.escape(heading)}</h2>(.*?)(<h2|$)", html, re.S)
    assert match is not None, heading
    return match.group(1)


def test_profiles_build_models_of_their_sizes():
    exp = get_experiment("slot-attention")
    for profile in ("smoke", "quick", "full"):
        cfg = exp.config(profile)
        model = build_model(cfg)
        size = cfg.data.image_size
        assert model.decoder.resolution == (size, size)
        assert model.encoder.slot_attention.num_slots == cfg.model.num_slots
    assert exp.config("full").model.num_slots == 11 and exp.config("full").data.name == "clevrtex"


def test_attention_colours_mix_slot_colours_by_weight():
    pure = colour_weights(np.eye(3)[:, :, None])[:, 0]  # pixel i wholly in slot i: (3, 3) colours
    np.testing.assert_allclose(pure, colour_ids(np.arange(1, 4)))  # slot k drawn as segment id k + 1
    assert len({tuple(c) for c in pure}) == 3
    np.testing.assert_allclose(colour_weights(np.full((3, 1, 1), 1 / 3))[0, 0], pure.mean(0))


@pytest.mark.slow
def test_smoke_run_resumes_exactly_and_reports(exact_resume):
    run_dir, _ = exact_resume("slot-attention")
    s = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "step" not in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(0 < r["val/loss"] < 1 and -1 <= r["val/ari"] <= 1 for r in epochs)
    assert all(math.isfinite(r["val/posterior/fg_ari"]) for r in epochs)  # logged every epoch
    methods = [r["method"] for r in s["baselines"]]
    assert methods == ["slot attention (ours): masks", "slot attention (ours): posterior assignment", "one segment",
                       "k-means colour", "k-means colour+position"]
    one = s["baselines"][2]
    assert one["ari"] == 0.0 and one["fg_ari"] == 0.0  # one segment: chance ARI, exactly
    assert s["best_baseline/fg_ari"] == max(r["fg_ari"] for r in s["baselines"][2:])
    assert [r["kind"] for r in s["baselines"]] == ["ours", "ours", "baseline", "baseline", "baseline"]
    assert math.isfinite(s["val/posterior/fg_ari"]) and math.isfinite(s["test/posterior/fg_ari"])
    assert s["fd_generated"] > 0 and s["fd_reconstruction"] > 0 and not s["inception"]
    assert "NOT Inception" in s["feature_space"] and s["n_generate"] == 6 and s["library_slots"] == 8 * 4
    with np.load(run_dir / "pictures.npz") as pics:
        assert pics["masks"].shape == (2, 4, 32, 32) and pics["attn"].shape == (3, 2, 4, 16, 16)
        assert pics["posterior"].shape == (2, 32, 32) and pics["posterior"].max() < 4
        np.testing.assert_allclose(pics["masks"].astype(np.float32).sum(1), 1.0, atol=5e-3)
        np.testing.assert_allclose(pics["attn"].astype(np.float32).sum(2), 1.0, atol=5e-3)
    html = (run_dir / "report.html").read_text()
    for heading in ("Reconstructions, per-slot masks and contents", "Attention of each iteration",
                    "Compositional generation"):
        assert "data:image/png;base64," in _section(html, heading)
    assert "NOT Inception FID" in _section(html, "Compositional generation")
    segmentation = _section(html, "Object discovery against learning-free baselines")
    assert "98.8" in segmentation and "posterior assignment" in segmentation


def test_missing_clevrtex_is_one_line_before_training(tmp_path, capsys):
    code = main(["run", "slot-attention", "--profile", "smoke", "--set", "data.name=clevrtex",
                 "--set", f"data.root={tmp_path}", "--out", str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.root" in err[0]
    assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.pt"))


def test_posterior_assignment_sharpens_flat_masks_by_colour_and_follows_the_masks_when_colour_is_uninformative():
    from syllabus.experiments.slot_attention_eval import posterior_ids

    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :, :2], x[0, 2, :, 2:] = 1.0, 1.0  # left half red, right half blue
    contents = torch.zeros(1, 2, 3, 2, 2)  # at half the image's size, upsampled inside
    contents[0, 0, 0], contents[0, 1, 2] = 1.0, 1.0  # slot 0 red, slot 1 blue
    masks = torch.full((1, 2, 1, 4, 4), 0.5)
    masks[0, 0, 0, 0, 0], masks[0, 1, 0, 0, 0] = 0.6, 0.4  # one pixel leans to slot 0
    recon = (masks * torch.nn.functional.interpolate(contents[0], size=(4, 4))[None]).sum(1)
    ids = posterior_ids(x, {"masks": masks, "contents": contents, "recon": recon})
    assert ids[0, :, :2].eq(0).all() and ids[0, :, 2:].eq(1).all()
    grey = torch.zeros(1, 2, 3, 2, 2)  # both slots the same colour: only the masks decide
    masks_right = masks.clone()
    masks_right[0, 1, 0, :, 1:] = 0.9
    masks_right[0, 0, 0, :, 1:] = 0.1
    ids = posterior_ids(x, {"masks": masks_right, "contents": grey, "recon": x + 1})
    torch.testing.assert_close(ids, masks_right.squeeze(2).argmax(1))


@pytest.mark.parametrize("exp, setting, words", [
    ("slot-attention", "model.encoder_strides=0", "positive integers"),
    ("slot-attention", "model.kernel_size=4", "an odd one"),
    ("slot-attention", "data.image_size=33", "data.image_size=33"),
    ("slot-diffusion", "model.beta_start=0.5", "must be below model.beta_end"),
    ("slot-diffusion", "model.unet_channels=0", "positive integers"),
])
def test_unbuildable_sizes_are_one_line_errors(exp, setting, words, tmp_path, capsys):
    from syllabus.cli import main

    assert main(["run", exp, "--profile", "smoke", "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
