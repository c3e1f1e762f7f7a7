"""The `slot-diffusion` experiment: attention segments, its checks, a smoke run that resumes exactly."""

import json

import numpy as np
import pytest
import torch

from syllabus.errors import UsageError
from syllabus.experiments.slot_diffusion import check, smoke
from syllabus.experiments.slot_diffusion_eval import attention_segments, make_scheduler


def test_attention_segments_resize_then_take_the_argmax_over_slots():
    attn = torch.zeros(1, 2, 4)  # (B, K, N) on a 2 x 2 grid: slot 1 owns the right column
    attn[0, 0, [0, 2]] = 1.0
    attn[0, 1, [1, 3]] = 1.0
    ids = attention_segments(attn, (2, 2), (4, 4))
    assert ids.shape == (1, 4, 4)
    assert ids[0, :, :2].eq(0).all() and ids[0, :, 2:].eq(1).all()


def test_make_scheduler_follows_the_model_settings():
    cfg = smoke()
    cfg.model.beta_schedule = "scaled_linear"
    sched = make_scheduler(cfg, "ddim", 4)
    assert sched.timesteps.tolist() == [750, 500, 250, 0]
    assert sched.betas[-1].item() == pytest.approx(0.0195, rel=1e-5)
    assert sched.betas[1].item() < 0.0015 + (0.0195 - 0.0015) / 999  # square roots spaced evenly: convex


@pytest.mark.parametrize("skip", [False, True])
def test_noise_skip_starts_the_zero_initialised_unet_at_the_linear_guess(skip):
    from syllabus.experiments.slot_diffusion import build_model

    cfg = smoke()
    cfg.model.noise_skip = skip
    model = build_model(cfg)
    z_t, slots = torch.randn(3, 3, 8, 8), torch.randn(3, cfg.model.num_slots, cfg.model.slot_dim)
    t = torch.tensor([999, 500, 0])
    abar = make_scheduler(cfg).alphas_cumprod[t].double()
    expected = (1 - abar).sqrt().view(-1, 1, 1, 1).float() * z_t if skip else torch.zeros_like(z_t)
    torch.testing.assert_close(model.predict_noise(z_t, t, slots), expected)
    if skip:  # for unit-variance latents that guess is E[noise | z_t]: near t = T it is almost exact
        z0, noise = torch.randn(4096, 3), torch.randn(4096, 3)
        z_T = make_scheduler(cfg).add_noise(z0, noise, torch.full((4096,), 999))
        guess_error = (model.noise_skip[999] * z_T - noise).square().mean()
        assert guess_error < 1e-3 < noise.square().mean()  # guessing no noise is off by its variance


def test_checks_fail_before_training(tmp_path):
    cfg = smoke()
    cfg.model.vae = str(tmp_path / "missing.pt")
    with pytest.raises(UsageError, match="not found; point model.vae"):
        check(cfg)
    cfg = smoke()
    cfg.model.unet_channels = (8, 16, 16, 16, 16)  # 32 px / 4 (VAE) = 8, cannot halve four times
    with pytest.raises(UsageError, match="must divide by 4 .VAE. x 16"):
        check(cfg)
    cfg = smoke()
    cfg.eval.ddpm_steps = 2000
    with pytest.raises(UsageError, match="at most model.timesteps=1000"):
        check(cfg)


@pytest.mark.slow
def test_smoke_run_trains_both_stages_scores_and_resumes_exactly(exact_resume):
    run_dir, _ = exact_resume("slot-diffusion")
    s = json.loads((run_dir / "summary.json").read_text())
    vae_epochs = [json.loads(r) for r in (run_dir / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in vae_epochs if "step" not in r] == [1, 2]  # stage 1, resumed across the cut
    assert s["vae"] == "trained here" and s["latent_shape"] == [3, 8, 8]
    assert s["latent_scale"] > 0 and s["epochs_run"] == 2
    assert set(s["baselines"]) == {"one segment", "k-means colour", "k-means colour+position"}
    assert s["baselines"]["one segment"]["ari"] == 0.0  # one segment against several: ARI exactly 0
    for key in ("test/ari", "test/fg_ari", "recon/mse_ddpm", "recon/mse_ddim", "generate/frechet"):
        assert np.isfinite(s[key])
    assert 0 < s["recon/mse_vae"] < 0.25 and s["generate/sampler"] == "ddpm 5"
    with np.load(run_dir / "pictures.npz") as pics:
        assert pics["generated"].shape == (4, 32, 32, 3) and pics["generated"].dtype == np.uint8
        assert pics["strip"].shape == (2, 4, 32, 32, 3)  # 3 kept timesteps and z_0
        assert pics["strip_t"].tolist() == [800, 400, 0]
        assert not np.array_equal(pics["recon_ddpm"], pics["recon_ddim"])
    html = (run_dir / "report.html").read_text()
    for heading in ("Object discovery from the slot-input attention", "Compositional generation", "Noise schedules"):
        assert heading in html


def _slot_attention_run(root, *sets: str):
    """A finished slot-attention smoke run under root (its run directory)."""
    from syllabus.cli import main

    args = ["run", "slot-attention", "--profile", "smoke", "--device", "cpu", "--out", str(root)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return next((root / "slot-attention").iterdir())


def test_slot_encoder_must_be_a_finished_slot_attention_run_of_the_same_size(tmp_path):
    from syllabus.config import to_dict
    from syllabus.experiments import slot_attention
    from syllabus.runs import write_json

    cfg = smoke()
    cfg.model.slot_encoder = str(tmp_path)
    with pytest.raises(UsageError, match="is not a run directory .a slot-attention run; 'none'"):
        check(cfg)
    saved = lambda name, c: {"experiment": name, "profile": "smoke", "config": to_dict(c)}  # noqa: E731
    write_json(tmp_path / "config.json", saved("slot-diffusion", smoke()))
    with pytest.raises(UsageError, match="is a 'slot-diffusion' run, not a slot-attention run"):
        check(cfg)
    write_json(tmp_path / "config.json", saved("slot-attention", slot_attention.smoke()))
    with pytest.raises(UsageError, match="has no checkpoints/best.pt"):
        check(cfg)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"")
    check(cfg)  # 32 px and 4 slots on both sides
    cfg.model.num_slots = 5
    with pytest.raises(UsageError, match=r"num_slots = \(32, 4\); this run \(32, 5\).*model.slot_encoder=none"):
        check(cfg)


@pytest.mark.slow
def test_the_encoder_starts_from_the_slot_attention_run_and_reports_beside_it(tmp_path):
    from syllabus.cli import main
    from syllabus.experiments import load_trained
    from syllabus.experiments.slot_diffusion import build_model

    upstream = _slot_attention_run(tmp_path / "up", "model.frames=attention")  # slots end with their frames
    cfg = smoke()
    cfg.model.slot_encoder = str(upstream)
    model, trained = build_model(cfg), load_trained(upstream)[0].encoder
    assert model.encoder.slot_width == cfg.model.slot_dim + 4  # the upstream's architecture, not this config's
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value, rtol=0, atol=0)
    # left empty, the runner trains the upstream's smoke first and hands it over
    args = ["run", "slot-diffusion", "--profile", "smoke", "--device", "cpu", "--out", str(tmp_path / "chain")]
    assert main([*args, "--set", "model.slot_encoder="]) == 0
    up_dir = next((tmp_path / "chain" / "slot-attention").iterdir())
    run_dir = next((tmp_path / "chain" / "slot-diffusion").iterdir())
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["slot_attention"]["run"] == str(up_dir)
    up = json.loads((up_dir / "summary.json").read_text())
    assert s["slot_attention"]["test/fg_ari"] == up["test/fg_ari"]
    assert "broadcast decoder (masks)" in (run_dir / "report.html").read_text()
