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
