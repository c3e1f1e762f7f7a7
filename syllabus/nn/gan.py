"""Generators and discriminators of a GAN (Goodfellow et al. 2014), as plain modules.

Two pairs: an MLP pair and a small DCGAN-style convolutional pair (Radford et al. 2016).
Images are (B, C, S, S) in [-1, 1] (the generator ends in tanh). Discriminators return
one logit per image, (B,), and split into `forward_features` / `forward_head`.

Also here, written from scratch, the pieces of the usual GAN mitigations that live in
the networks or act on their inputs: spectral normalisation (Miyato et al. 2018),
minibatch standard deviation (Karras et al. 2018) and differentiable augmentation
(Zhao et al. 2020). The training step with its two optimizers is `syllabus.gan_step`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from syllabus.registry import Registry

GENERATORS: Registry[type] = Registry("generator")
DISCRIMINATORS: Registry[type] = Registry("discriminator")


# --------------------------------------------------------------------------- mitigations as layers


class SpectralNorm(nn.Module):
    """Parametrization W -> W / sigma(W), sigma estimated by power iteration (Miyato et al. 2018, eq. 8).

    One power-iteration step per forward pass in training mode, as the paper does; the
    vectors u, v persist as buffers, so the estimate sharpens over training. In eval mode
    the last estimate is used unchanged.

    Args:
        weight: the weight to be normalised, (out, ...); only its shape is used.
        eps: floor of the norms in the power iteration.
    """

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        rows, cols = weight.shape[0], weight[0].numel()
        self.eps = eps
        self.register_buffer("u", F.normalize(torch.randn(rows), dim=0, eps=eps))  # (out,)
        self.register_buffer("v", F.normalize(torch.randn(cols), dim=0, eps=eps))  # (in,)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.flatten(1)  # (out, in)
        if self.training:
            with torch.no_grad():
                self.u.copy_(F.normalize(w @ self.v, dim=0, eps=self.eps))  # u = W v / |W v|
                self.v.copy_(F.normalize(w.t() @ self.u, dim=0, eps=self.eps))  # v = W^T u / |W^T u|
        sigma = self.u.clone() @ w @ self.v.clone()  # u^T W v, the largest singular value
        return weight / sigma


def spectral_normalized(module: nn.Module) -> nn.Module:
    """Register `SpectralNorm` on `module.weight` (a Linear or Conv2d); returns the module."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight))
    return module


def _plain(module: nn.Module) -> nn.Module:
    return module


class MinibatchStd(nn.Module):
    """Appends the batch's mean standard deviation as one more feature (Karras et al. 2018, sec. 3).

    The standard deviation of every feature over the batch, averaged into one number, is
    given to the discriminator next to each sample's own features: a generator that
    produces near-identical samples (mode collapse) becomes easy to tell apart.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, ...) -> (B, F + 1, ...)
        std = (x.var(0, unbiased=False) + 1e-8).sqrt().mean()  # scalar
        extra = std.expand(x.shape[0], 1, *x.shape[2:])  # (B, 1, ...)
        return torch.cat([x, extra], 1)


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): brightness, contrast, translation, cutout; differentiable in x.

    Applied to real and generated images alike, every time the discriminator sees them, so
    D cannot memorise the few real images of a small training set. Each image draws its
    own random parameters from torch's global generator.

    Args:
        x: (B, C, S, S) in [-1, 1].
    """
    b, device = x.shape[0], x.device
    x = x + (torch.rand(b, 1, 1, 1, device=device) - 0.5)  # brightness shift in [-0.5, 0.5]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=device) + 0.5) + mean  # contrast x[0.5, 1.5]
    return _cutout(_translate(x))


def _translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size (at least one pixel); vacated pixels are -1."""
    b, _, s, _ = x.shape
    shift = max(1, int(s * ratio + 0.5))
    offsets = torch.randint(-shift, shift + 1, (b, 2), device=x.device)  # (B, 2) pixels (dy, dx)
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)  # (B, C, S + 2k, S + 2k)
    idx = torch.arange(s, device=x.device)
    rows = (idx[None, :] + shift - offsets[:, :1])[:, None, :, None]  # (B, 1, S, 1)
    cols = (idx[None, :] + shift - offsets[:, 1:])[:, None, None, :]  # (B, 1, 1, S)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]  # (B, C, S, S)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set a random square of side `ratio` * S in each image to -1 (background)."""
    b, _, s, _ = x.shape
    side = max(1, int(s * ratio + 0.5))
    top_left = torch.randint(0, s - side + 1, (b, 2), device=x.device)  # (B, 2)
    idx = torch.arange(s, device=x.device)
    inside_r = (idx[None] >= top_left[:, :1]) & (idx[None] < top_left[:, :1] + side)  # (B, S)
    inside_c = (idx[None] >= top_left[:, 1:]) & (idx[None] < top_left[:, 1:] + side)  # (B, S)
    hole = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]  # (B, 1, S, S)
    return torch.where(hole, torch.full_like(x, -1.0), x)


# --------------------------------------------------------------------------- MLP pair


@GENERATORS.register("mlp")
class MLPGenerator(nn.Module):
    """z -> two hidden LeakyReLU layers -> image through tanh.

    Args:
        z_dim: size of the noise vector.
        image_size: side S of the square output.
        channels: image channels C.
        width: hidden units.
    """

    def __init__(self, z_dim: int, image_size: int, channels: int = 1, width: int = 128):
        super().__init__()
        self.z_dim, self.shape = z_dim, (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(z_dim, width), nn.LeakyReLU(0.2),
            nn.Linear(width, width), nn.LeakyReLU(0.2),
            nn.Linear(width, channels * image_size * image_size), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z_dim) -> (B, C, S, S)
        return self.net(z).view(len(z), *self.shape)


@DISCRIMINATORS.register("mlp")
class MLPDiscriminator(nn.Module):
    """Flattened image -> two hidden LeakyReLU layers -> one logit.

    Args:
        image_size: side S of the square input.
        channels: image channels C.
        width: hidden units.
        spectral_norm: normalise every linear layer's weight by its spectral norm.
        minibatch_std: append the batch's mean standard deviation before the last layer.
    """

    def __init__(self, image_size: int, channels: int = 1, width: int = 128, spectral_norm: bool = False,
                 minibatch_std: bool = False):
        super().__init__()
        sn = spectral_normalized if spectral_norm else _plain
        self.body = nn.Sequential(
            nn.Flatten(), sn(nn.Linear(channels * image_size * image_size, width)), nn.LeakyReLU(0.2),
            sn(nn.Linear(width, width)), nn.LeakyReLU(0.2),
        )
        self.mbstd = MinibatchStd() if minibatch_std else nn.Identity()
        self.head = sn(nn.Linear(width + int(minibatch_std), 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, width)
        return self.body(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:  # (B, width) -> (B,)
        return self.head(self.mbstd(feats)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- DCGAN-style conv pair


@GENERATORS.register("conv")
class ConvGenerator(nn.Module):
    """z -> linear to (4w, S/4, S/4) -> two stride-2 transposed convolutions -> tanh (DCGAN).

    Batch norm and ReLU after every layer but the last, as in DCGAN.

    Args:
        z_dim: size of the noise vector.
        image_size: side S of the output, a multiple of 4.
        channels: image channels C.
        width: channels w of the last hidden layer (4w, 2w before it).
    """

    def __init__(self, z_dim: int, image_size: int, channels: int = 1, width: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ConvGenerator needs an image size divisible by 4, got {image_size}")
        self.z_dim, self.start = z_dim, (4 * width, image_size // 4, image_size // 4)
        self.project = nn.Sequential(nn.Linear(z_dim, 4 * width * (image_size // 4) ** 2, bias=False),
                                     nn.BatchNorm1d(4 * width * (image_size // 4) ** 2), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z_dim) -> (B, C, S, S)
        h = self.project(z).view(len(z), *self.start)  # (B, 4w, S/4, S/4)
        return self.up(h)


@DISCRIMINATORS.register("conv")
class ConvDiscriminator(nn.Module):
    """Two stride-2 convolutions with LeakyReLU -> linear to one logit (DCGAN, without batch norm).

    No batch norm, so that spectral normalisation and minibatch statistics are the only
    couplings between samples.

    Args:
        image_size: side S of the input, a multiple of 4.
        channels: image channels C.
        width: channels w of the first convolution (2w in the second).
        spectral_norm: normalise every layer's weight by its spectral norm.
        minibatch_std: append the batch's mean standard deviation as one more channel.
    """

    def __init__(self, image_size: int, channels: int = 1, width: int = 32, spectral_norm: bool = False,
                 minibatch_std: bool = False):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ConvDiscriminator needs an image size divisible by 4, got {image_size}")
        sn = spectral_normalized if spectral_norm else _plain
        self.body = nn.Sequential(
            sn(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
        )
        self.mbstd = MinibatchStd() if minibatch_std else nn.Identity()
        self.head = sn(nn.Linear((2 * width + int(minibatch_std)) * (image_size // 4) ** 2, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, 2w, S/4, S/4)
        return self.body(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:  # (B, 2w, S/4, S/4) -> (B,)
        return self.head(self.mbstd(feats).flatten(1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
