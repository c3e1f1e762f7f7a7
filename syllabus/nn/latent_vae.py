"""A convolutional VAE with a spatial latent, the first stage of latent diffusion.

The interface is the assignment's: `vae = VAE(); vae.load_state_dict(...)`,
`z = vae.encode(images)` with images (B, 3, 128, 128) in [-1, 1] giving z (B, 3, 32, 32)
(64 px give 16 x 16: the side shrinks 4 times), and `vae.decode(z)` back to images.
`encode` returns the posterior mean; `posterior` gives (mean, log-variance) for training.

Encoder and decoder are the UNet's residual blocks without a timestep (average pooling
down, interpolation up). Training minimises the KL-regularised autoencoder loss of
Rombach et al. (2022): mean squared reconstruction error of one reparameterised sample
plus a small weight times KL(q(z|x) || N(0, I)) per latent element, which keeps the
latent near unit scale without blurring it much.

`load_vae_checkpoint` reads a user's file with `weights_only=True` and names every
mismatched key in one UsageError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from syllabus.errors import UsageError
from syllabus.nn.unet import ResBlock, group_norm
from syllabus.nn.vae import gaussian_kl, reparameterize
from syllabus.nn.weights import fit_weights, read_weights


class VAE(nn.Module):
    """Images (B, C, S, S) in [-1, 1] <-> latents (B, latent_channels, S / 2^n, S / 2^n).

    Args:
        in_channels: image channels.
        latent_channels: channels of z (3: the assignment's [B, 3, 32, 32] at 128 px).
        channels: widths per level; len(channels) - 1 = n halvings of the side (2 by default).
    """

    def __init__(self, in_channels: int = 3, latent_channels: int = 3, channels: Sequence[int] = (32, 64, 64)):
        super().__init__()
        channels = list(channels)
        self.factor = 2 ** (len(channels) - 1)
        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        for a, b in zip(channels[:-1], channels[1:]):
            enc += [ResBlock(a, a), ResBlock(a, b, resample="down")]
        enc += [ResBlock(channels[-1], channels[-1]), group_norm(channels[-1]), nn.SiLU(),
                nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, channels[-1], 3, padding=1),
                                ResBlock(channels[-1], channels[-1])]
        for a, b in zip(channels[:0:-1], channels[-2::-1]):
            dec += [ResBlock(a, b, resample="up"), ResBlock(b, b)]
        dec += [group_norm(channels[0]), nn.SiLU(), nn.Conv2d(channels[0], in_channels, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): mean and log-variance, each (B, latent_channels, S / f, S / f)."""
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"VAE input {tuple(x.shape[-2:])} must divide by {self.factor}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [-1, 1] -> z = the posterior mean (B, latent_channels, S / f, S / f)."""
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, h, w) -> images (B, C, h * f, w * f), about [-1, 1] (not clamped)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reparameterised pass: (reconstruction, mean, logvar)."""
        mean, logvar = self.posterior(x)
        return self.decode(reparameterize(mean, logvar)), mean, logvar


def vae_loss(vae: VAE, x: torch.Tensor, kl_weight: float = 1e-4) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of one reparameterised reconstruction + kl_weight * KL per latent element; (loss, parts)."""
    recon, mean, logvar = vae(x)
    mse = F.mse_loss(recon, x)
    kl = gaussian_kl(mean, logvar).mean()
    loss = mse + kl_weight * kl
    return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}


def load_vae_checkpoint(vae: VAE, path: str | Path, key: str = "model.vae") -> VAE:
    """Fill `vae` from a checkpoint file (weights_only), or raise one UsageError naming every mismatch.

    Args:
        vae: the model to fill (its architecture must match the file's).
        path: a state dict saved by torch.save, bare or under "state_dict" / "model" / "vae".
        key: the config key that pointed at the file, named in the messages.
    """
    if not Path(path).expanduser().is_file():
        raise UsageError(f"VAE checkpoint {path} not found; point {key} at the .pt file of the given VAE "
                         f"(or leave it empty to train one here)")
    fit_weights(vae, read_weights(path, key), key, path, f"this VAE (widths {_widths(vae)})")
    return vae


def _widths(vae: VAE) -> list[int]:
    return [m.conv1.out_channels for m in vae.encoder if isinstance(m, ResBlock) and m.resample != "down"]
