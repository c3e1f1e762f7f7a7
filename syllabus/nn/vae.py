"""A variational autoencoder (Kingma & Welling 2014) and its bounds, written from scratch.

The encoder maps an image x to the mean and log-variance of a diagonal Gaussian
q(z|x) = N(mu, diag(exp(logvar))); the decoder maps a latent z to the logits of
independent Bernoulli pixels p(x|z). With the prior p(z) = N(0, I), training maximises

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))                      (Kingma & Welling, eq. 3)

with one reparameterised sample z = mu + sigma * eps, eps ~ N(0, I) (eq. 4) for the first
term and the closed form of the KL between two Gaussians (appendix B). The importance-
weighted bound of Burda et al. (2016, eq. 8) with k samples,

    L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x),

equals the ELBO for k = 1, does not decrease with k, and tends to log p(x): it is the
test log-likelihood estimate. All quantities are in nats per image.

Pixels of grey (non-binary) images are scored by the Bernoulli cross-entropy, as is usual;
for a normalised likelihood use binarised images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- densities and the ELBO


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, differentiable in mu and logvar (eq. 4).

    Args:
        mu, logvar: (..., d) parameters of q(z|x).
        eps: standard normal noise broadcastable to (..., d), e.g. (k, B, d) for k samples;
            drawn fresh when None.
    """
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + (0.5 * logvar).exp() * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per latent dimension: (B, d) -> (B, d).

    Closed form: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2); sum over d for the whole KL.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def log_normal(z: torch.Tensor, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension: (..., d) -> (...).

    With mu and logvar None it is the standard normal prior log p(z).
    """
    mu = torch.zeros_like(z) if mu is None else mu
    logvar = torch.zeros_like(z) if logvar is None else logvar
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of independent Bernoulli pixels: (B, C, H, W) logits and targets -> (B,).

    This is minus the binary cross-entropy summed over pixels.
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> dict:
    """The ELBO of each image and its two terms, in nats.

    Args:
        logits: (B, C, H, W) decoder output at one sample z ~ q(z|x).
        x: (B, C, H, W) targets in [0, 1].
        mu, logvar: (B, d) parameters of q(z|x).

    Returns:
        {"recon": (B,) reconstruction loss -log p(x|z) (the cross-entropy),
         "kl": (B,) KL(q(z|x) || p(z)), "kl_dims": (B, d) its per-dimension terms,
         "elbo": (B,) -(recon + kl)}.
    """
    recon = -bernoulli_log_likelihood(logits, x)
    kl_dims = gaussian_kl(mu, logvar)
    kl = kl_dims.sum(-1)
    return {"recon": recon, "kl": kl, "kl_dims": kl_dims, "elbo": -(recon + kl)}


# --------------------------------------------------------------------------- the model


class VAE(nn.Module):
    """An encoder to (mu, logvar), a decoder to Bernoulli logits, and sampling between them.

    Args:
        encoder: (B, C, H, W) -> (B, 2 * latent_dim), the means then the log-variances.
        decoder: (B', latent_dim) -> (B', C, H, W) logits, for any leading size B'.
        latent_dim: d, the size of z.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, d) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) latents -> (..., C, H, W) logits."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, self.latent_dim))  # (N, C, H, W)
        return logits.reshape(*lead, *logits.shape[1:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reparameterised pass: (logits (B, C, H, W), mu (B, d), logvar (B, d))."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixel means sigmoid(logits) of n draws from the prior: (n, C, H, W)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z).sigmoid()


def _mlp(widths: Sequence[int]) -> list[nn.Module]:
    """Linear layers between consecutive widths, ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return layers


def mlp_vae(size: int, latent_dim: int, hidden: Sequence[int] = (256, 128), channels: int = 1) -> VAE:
    """Fully connected encoder and mirrored decoder on flattened (channels, size, size) images.

    Args:
        size: image side S.
        latent_dim: d.
        hidden: encoder widths; the decoder uses them reversed.
        channels: image channels C.
    """
    pixels = channels * size * size
    encoder = nn.Sequential(nn.Flatten(), *_mlp([pixels, *hidden, 2 * latent_dim]))
    decoder = nn.Sequential(*_mlp([latent_dim, *reversed(hidden), pixels]), nn.Unflatten(1, (channels, size, size)))
    return VAE(encoder, decoder, latent_dim)


def conv_vae(size: int, latent_dim: int, widths: Sequence[int] = (32, 64), channels: int = 1) -> VAE:
    """Stride-2 convolutions down to (widths[-1], S/2^n, S/2^n), a linear map to and from z,
    and mirrored transposed convolutions back up.

    Args:
        size: image side S, divisible by 2 ** len(widths).
        latent_dim: d.
        widths: channels after each stride-2 convolution of the encoder.
        channels: image channels C.
    """
    if size % 2 ** len(widths):
        raise ValueError(f"conv VAE: image size {size} is not divisible by 2**{len(widths)}")
    side = size // 2 ** len(widths)
    flat = widths[-1] * side * side
    down: list[nn.Module] = []
    for a, b in zip([channels, *widths[:-1]], widths):
        down += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]  # halves H and W
    up: list[nn.Module] = []
    outs = [*reversed(widths[:-1]), channels]
    for i, (a, b) in enumerate(zip(reversed(widths), outs)):
        up += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)] + ([nn.ReLU()] if i < len(outs) - 1 else [])
    encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, 2 * latent_dim))  # (B, 2d)
    decoder = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, (widths[-1], side, side)), *up)
    return VAE(encoder, decoder, latent_dim)


ARCHS: dict[str, Callable[..., VAE]] = {"mlp": mlp_vae, "conv": conv_vae}


# --------------------------------------------------------------------------- importance sampling


@torch.no_grad()
def log_importance_weights(model: VAE, x: torch.Tensor, k: int, max_rows: int = 8192) -> torch.Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): (k, B).

    Draws are decoded in chunks of at most `max_rows` images.
    """
    mu, logvar = model.encode(x)  # (B, d)
    chunk = max(1, max_rows // len(x))
    out = []
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        z = reparameterize(mu, logvar, torch.randn(c, *mu.shape, device=mu.device))  # (c, B, d)
        logits = model.decode(z)  # (c, B, C, H, W)
        log_px = bernoulli_log_likelihood(logits.flatten(0, 1), x.expand(c, *x.shape).flatten(0, 1)).view(c, -1)
        out.append(log_px + log_normal(z) - log_normal(z, mu, logvar))  # (c, B)
    return torch.cat(out)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_k = logsumexp_i(log w_i) - log k over the first dimension: (k, B) -> (B,)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
