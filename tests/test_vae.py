"""The VAE's pieces against oracles: torch.distributions densities, Monte-Carlo KL, and the exact
log-likelihood of a 1-D latent model by quadrature for the IWAE bound."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from syllabus.experiments.vae import elbo_means
from syllabus.nn.vae import (
    ARCHS,
    bernoulli_log_likelihood,
    conv_vae,
    elbo_terms,
    gaussian_kl,
    iwae_bound,
    log_importance_weights,
    log_normal,
    mlp_vae,
    reparameterize,
)


@pytest.fixture
def posterior():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)  # mu, logvar: (B, d)


def test_kl_equals_torch_closed_form(posterior):
    mu, logvar = posterior
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))  # (B, d)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected, rtol=1e-5, atol=1e-6)


def test_kl_equals_monte_carlo_estimate(posterior):
    mu, logvar = posterior
    torch.manual_seed(1)
    z = reparameterize(mu, logvar, torch.randn(200_000, *mu.shape))  # (N, B, d)
    log_ratio = log_normal(z, mu, logvar) - log_normal(z)  # (N, B): log q(z|x) - log p(z)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    kl = gaussian_kl(mu, logvar).sum(-1)
    assert ((mc - kl).abs() < 4 * se).all(), (mc, kl, se)
    assert (se < 0.02).all()  # the tolerance is tight enough to catch a wrong constant


def test_log_densities_match_torch(posterior):
    mu, logvar = posterior
    z = torch.randn(5, *mu.shape)
    torch.testing.assert_close(log_normal(z, mu, logvar), Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1))
    torch.testing.assert_close(log_normal(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    logits = torch.randn(3, 1, 4, 4)
    x = torch.bernoulli(torch.full_like(logits, 0.3))
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), expected)


def test_reparameterize_has_the_posterior_moments_and_unit_gradient(posterior):
    mu, logvar = (t.clone().requires_grad_() for t in posterior)
    torch.manual_seed(2)
    z = reparameterize(mu, logvar, torch.randn(100_000, *mu.shape))  # (N, B, d)
    torch.testing.assert_close(z.mean(0), mu.detach(), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), (0.5 * logvar.detach()).exp(), atol=0, rtol=0.02)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full_like(mu, 100_000.0))


def test_elbo_terms_match_hand_written_cross_entropy_and_torch_kl():
    """Each term against its own oracle, in float64: the cross-entropy written out with sigmoids
    (x in [0, 1], not only binary) and torch's closed-form KL per latent dimension."""
    torch.manual_seed(3)
    logits, x = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.rand(2, 1, 4, 4, dtype=torch.float64)
    mu, logvar = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    t = elbo_terms(logits, x, mu, logvar)
    p = torch.sigmoid(logits)
    recon = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)  # (B,)
    kl_dims = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))  # (B, d)
    torch.testing.assert_close(t["recon"], recon)
    torch.testing.assert_close(t["kl_dims"], kl_dims)
    torch.testing.assert_close(t["kl"], kl_dims.sum(-1))
    torch.testing.assert_close(t["elbo"], -(recon + kl_dims.sum(-1)))


@pytest.mark.parametrize("arch,size", [("mlp", 8), ("conv", 8), ("conv", 28)])
def test_every_parameter_gets_a_finite_gradient(arch, size):
    torch.manual_seed(0)
    model = ARCHS[arch](size, 3)
    x = torch.rand(5, 1, size, size)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (5, 3)
    assert model.decode(torch.zeros(4, 2, 3)).shape == (4, 2, 1, size, size)
    assert model.sample(6).shape == (6, 1, size, size)
    (-elbo_terms(logits, x, mu, logvar)["elbo"].mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_conv_vae_needs_a_divisible_size():
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*2"):
        conv_vae(10, 2, (16, 32))


def _model_1d():
    """A random 1-D latent VAE on 4x4 binary images, decoder sharpened so q is far from the posterior."""
    torch.manual_seed(0)
    model = mlp_vae(4, 1, (16,))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3)
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4))
    return model, x


@torch.no_grad()
def _exact_log_px(model, x):
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) over z, on a fine grid: (B,)."""
    zs = torch.linspace(-12, 12, 40_001)[:, None]  # (G, 1)
    logits = model.decode(zs)  # (G, 1, 4, 4)
    log_joint = torch.stack([bernoulli_log_likelihood(logits, xi.expand_as(logits)) for xi in x], 1)  # (G, B)
    return torch.logsumexp(log_joint + log_normal(zs)[:, None], 0) + math.log(float(zs[1, 0] - zs[0, 0]))


def _mean_bound(model, x, k, draws=60_000):
    """Mean and standard error of the k-sample bound over draws // k independent repetitions: (B,), (B,)."""
    reps = draws // k
    log_w = log_importance_weights(model, x, k * reps).view(reps, k, -1)  # (R, k, B)
    bounds = torch.stack([iwae_bound(w) for w in log_w])  # (R, B)
    return bounds.mean(0), bounds.std(0) / math.sqrt(reps)


def test_iwae_k1_is_the_elbo_estimate():
    model, x = _model_1d()
    log_w = torch.randn(1, 6)
    torch.testing.assert_close(iwae_bound(log_w), log_w[0])  # one sample: the bound is log w itself
    torch.manual_seed(4)
    iwae1, se1 = _mean_bound(model, x, 1)
    with torch.no_grad():
        reps = 20_000
        xs = x.repeat(reps, 1, 1, 1)  # (R * B, 1, 4, 4)
        elbo = elbo_terms(*_forward(model, xs))["elbo"].view(reps, -1)  # (R, B), analytic KL
    se = torch.sqrt(se1**2 + (elbo.std(0) / math.sqrt(reps)) ** 2)
    assert ((iwae1 - elbo.mean(0)).abs() < 4 * se).all(), (iwae1, elbo.mean(0), se)


def test_iwae_rises_with_k_towards_the_exact_log_likelihood():
    model, x = _model_1d()
    log_px = _exact_log_px(model, x)
    torch.manual_seed(5)
    means = {k: _mean_bound(model, x, k) for k in (1, 10, 100, 1000)}
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        (a, se_a), (b, se_b) = means[small], means[large]
        assert (b > a - 3 * torch.sqrt(se_a**2 + se_b**2)).all(), (small, large, a, b)
    assert (means[10][0] - means[1][0] > 0.5).all()  # a real gap, not noise
    for m, se in means.values():
        assert (m < log_px + 4 * se + 1e-3).all()  # a lower bound on log p(x)
    iwae_1000, se = means[1000]
    assert ((log_px - iwae_1000).abs() < 4 * se + 0.01).all(), (log_px, iwae_1000)


def test_evaluation_means_are_per_image_over_uneven_batches():
    """Mean loss, ELBO, reconstruction and KL per image (7 images in batches of 5 and 2), against
    torch.distributions' Bernoulli log-probability and closed-form KL at the same posterior draws."""
    model, x = _model_1d()
    x = torch.cat([x, x[:1]])  # 7 images: batches of 5 and 2
    torch.manual_seed(6)
    got = elbo_means(model, [(x[:5],), (x[5:],)])
    torch.manual_seed(6)
    recon, kl = [], []
    with torch.no_grad():
        for part in (x[:5], x[5:]):
            logits, mu, logvar = model(part)
            recon.append(-Bernoulli(logits=logits).log_prob(part).flatten(1).sum(1))  # (B,)
            kl.append(kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1))  # (B,)
    recon, kl = torch.cat(recon), torch.cat(kl)  # (7,)
    expected = {"recon": recon.mean(), "kl": kl.mean(), "elbo": -(recon + kl).mean(), "loss": (recon + kl).mean()}
    assert got["recon"] > 1 and got["kl"] > 0.01  # terms of a real size, not zeros
    for k, value in expected.items():
        assert got[k] == pytest.approx(float(value), rel=1e-5), k


def _forward(model, x):
    logits, mu, logvar = model(x)
    return logits, x, mu, logvar
