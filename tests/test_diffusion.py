"""Our DDPM and DDIM schedulers against diffusers' on the same inputs, model outputs and noise."""

import math

import diffusers
import pytest
import torch

from syllabus.nn.diffusion import DDIMScheduler, DDPMScheduler, make_betas, sample_loop

KW = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195}
SCHEDULES = ("linear", "scaled_linear")
TIMESTEPS = (999, 500, 1, 0)


def _pair(schedule: str, ddim: bool = False, steps: int = 1000, eta: float = 0.0):
    if ddim:
        ours = DDIMScheduler(beta_schedule=schedule, eta=eta, **KW)
        theirs = diffusers.DDIMScheduler(beta_schedule=schedule, clip_sample=False, **KW)
    else:
        ours = DDPMScheduler(beta_schedule=schedule, **KW)
        theirs = diffusers.DDPMScheduler(beta_schedule=schedule, clip_sample=False, **KW)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    return ours, theirs


def _inputs(seed: int = 0, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 1.5


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_cumulative_alphas_match_diffusers(schedule):
    ours, theirs = _pair(schedule)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(ours.betas, theirs.betas)


def test_the_two_schedules_differ_as_the_issue_says():
    abar = {s: DDPMScheduler(beta_schedule=s, **KW).alphas_cumprod[-1].item() for s in SCHEDULES}
    assert abar["linear"] == pytest.approx(2.6e-5, rel=0.05)
    assert abar["scaled_linear"] == pytest.approx(1.4e-4, rel=0.05)
    assert make_betas("scaled_linear", 0.0015, 0.0195, 3)[1].item() == pytest.approx(((0.0015**0.5 + 0.0195**0.5) / 2)
                                                                                     ** 2)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_matches_diffusers(schedule):
    ours, theirs = _pair(schedule)
    x0, noise = _inputs(1)
    t = torch.tensor([999, 500, 1, 0])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", TIMESTEPS)
def test_ddpm_step_matches_diffusers_given_the_same_noise(schedule, t):
    ours, theirs = _pair(schedule)
    sample, eps = _inputs(2)
    mine = ours.step(eps, t, sample, generator=torch.Generator().manual_seed(7))
    ref = theirs.step(eps, t, sample, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(mine.prev_sample, ref.prev_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.pred_original_sample, ref.pred_original_sample, rtol=1e-5, atol=1e-4)
    if t > 0:  # the noise matters: another draw moves the sample by about sigma_t
        other = ours.step(eps, t, sample, generator=torch.Generator().manual_seed(8)).prev_sample
        assert (other - ref.prev_sample).abs().max() > 1e-3


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", (0.0, 1.0))
def test_ddim_steps_match_diffusers_with_fewer_steps(schedule, eta):
    ours, theirs = _pair(schedule, ddim=True, steps=50, eta=eta)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    sample, eps = _inputs(3)
    for t in (980, 500, 20, 0):
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(t))
        mine = ours.step(eps, t, sample, noise=noise).prev_sample
        ref = theirs.step(eps, t, sample, eta=eta, variance_noise=noise).prev_sample
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", TIMESTEPS)
def test_ddim_all_steps_at_the_issue_timesteps(schedule, t):
    ours, theirs = _pair(schedule, ddim=True)
    sample, eps = _inputs(4)
    torch.testing.assert_close(ours.step(eps, t, sample).prev_sample,
                               theirs.step(eps, t, sample).prev_sample, rtol=1e-5, atol=1e-5)


def test_strided_ddpm_matches_diffusers_over_a_whole_loop():
    ours, theirs = _pair("linear", steps=40)
    x_T, _ = _inputs(5)

    def eps_model(x, t):  # a deterministic stand-in for a network: depends on x and t
        return torch.tanh(0.5 * x) * (1 + t.view(-1, 1, 1, 1) / 1000)

    mine, kept = sample_loop(eps_model, ours, x_T, generator=torch.Generator().manual_seed(0), keep=(975, 0))
    x, g = x_T, torch.Generator().manual_seed(0)
    for t in theirs.timesteps:
        x = theirs.step(eps_model(x, t.expand(len(x))), t, x, generator=g).prev_sample
    torch.testing.assert_close(mine, x, rtol=1e-5, atol=1e-5)
    assert sorted(kept) == [0, 975] and torch.equal(kept[975], x_T)


def test_step_closed_form_at_t0_is_the_predicted_clean_sample():
    # at t = 0 the DDPM step adds no noise and returns x0_hat itself
    s = DDPMScheduler(**KW)
    sample, eps = _inputs(6)
    out = s.step(eps, 0, sample)
    abar = s.alphas_cumprod[0].double().item()
    expect = (sample - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    torch.testing.assert_close(out.prev_sample, expect)


def test_bad_timestep_and_schedule_are_errors():
    s = DDPMScheduler(**KW)
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of the 10"):
        s.step(torch.zeros(1), 999, torch.zeros(1))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        DDPMScheduler(beta_schedule="cosine")
