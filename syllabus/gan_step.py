"""The GAN's training step for the loop core: its losses, its two optimizers, its updates.

Every training step makes `d_steps` discriminator updates (one real batch each) and then
`g_steps` generator updates (Goodfellow et al. 2014, Algorithm 1), each through
`ctx.update("d" | "g", loss, grad_norm=True)`; the loop itself (seeding, resume, guards,
checkpoints, the metrics log) is `syllabus.train.fit`, as for every experiment. An epoch is
a period of `train.steps_per_epoch` steps, ended by the caller's evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from syllabus.config import choice, ranged
from syllabus.nn.gan import diff_augment
from syllabus.train import StepContext, TrainConfig, Trainer


@dataclass
class GanTrainConfig(TrainConfig):
    """`train.*` of a GAN: the core's settings with two learning rates and the update counts.

    An epoch is a period of `steps_per_epoch` steps (evaluation, sample grid, checkpoint);
    `epochs` periods make the run. `train.lr` is not used: D and G have `lr_d` and `lr_g`.
    """

    steps_per_epoch: int = ranged(250, 1)  # steps per period
    optimizer: str = choice("adam", ["adam"])
    beta1: float = ranged(0.5, 0, 1, hi_open=True)  # 0.5 as in DCGAN
    weight_decay: float = ranged(0.0, 0)
    schedule: str = choice("constant", ["constant", "cosine", "step", "exponential"])
    monitor: str = "val/frechet"
    monitor_mode: str = choice("min", ["max", "min"])
    log_every: int = ranged(1, 0)  # every step, for the loss and gradient-norm curves
    lr_d: float = ranged(2e-4, 0, 10, lo_open=True)
    lr_g: float = ranged(2e-4, 0, 10, lo_open=True)
    d_steps: int = ranged(1, 1)  # discriminator updates per step, each on its own real batch
    g_steps: int = ranged(1, 1)  # generator updates per step, each on fresh noise


@dataclass
class Objective:
    """The loss side of training, with the mitigations that act on it.

    Args:
        non_saturating: G minimises -log D(G(z)) instead of the minimax log(1 - D(G(z))).
        label_smoothing: one-sided: D's target for real images is 1 - this (Salimans et al. 2016).
        instance_noise: std of Gaussian noise added to every image D sees, annealed linearly
            to 0 over training (Sønderby et al. 2017).
        diffaug: differentiable augmentation of every image D sees (Zhao et al. 2020).
    """

    non_saturating: bool = True
    label_smoothing: float = 0.0
    instance_noise: float = 0.0
    diffaug: bool = False

    def d_input(self, x: torch.Tensor, noise_std: float) -> torch.Tensor:
        """What D sees of an image batch (B, C, S, S): augmented and/or noised, differentiably."""
        if self.diffaug:
            x = diff_augment(x)
        if noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        return x


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """-[t log D(x) + (1 - t) log(1 - D(x))] - log(1 - D(G(z))), mean over the batch; t = real target."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: torch.Tensor, non_saturating: bool) -> torch.Tensor:
    """Non-saturating -log D(G(z)) = softplus(-l), or minimax log(1 - D(G(z))) = -softplus(l).

    With logit l = D's pre-sigmoid output: d/dl of the minimax loss is -sigmoid(l), which
    vanishes when D confidently rejects the fakes (l -> -inf); the non-saturating loss's
    is -(1 - sigmoid(l)), close to -1 there.
    """
    return F.softplus(-fake_logits).mean() if non_saturating else -F.softplus(fake_logits).mean()


class Permutations(Sampler[int]):
    """`num_samples` indices: successive random permutations of range(n), cut where the count is reached.

    Drawn from torch's global generator, which the loop core seeds at every epoch, so the
    draws depend only on (seed, epoch). Works for n smaller than one batch.
    """

    def __init__(self, n: int, num_samples: int):
        self.n, self.num_samples = n, num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        perms = [torch.randperm(self.n) for _ in range(-(-self.num_samples // self.n))]
        return iter(torch.cat(perms)[:self.num_samples].tolist())


def real_loader(images: torch.Tensor, cfg: GanTrainConfig) -> DataLoader:
    """Batches of `d_steps * batch_size` real images, exactly `steps_per_epoch` of them per pass.

    The images come as successive random permutations (`Permutations`), so a training set
    smaller than one batch (the few images of the overfitting scenario) still fills every batch.
    """
    per_step = cfg.batch_size * cfg.d_steps
    # the loader's own generator only seeds (absent) workers; it keeps torch's global stream for the steps
    return DataLoader(TensorDataset(images), batch_size=per_step, generator=torch.Generator(),
                      sampler=Permutations(len(images), cfg.steps_per_epoch * per_step))


Evaluate = Callable[[nn.Module, nn.Module, StepContext], dict[str, float]]


class GanTrainer(Trainer):
    """A generator and a discriminator, each with its own Adam; D updates, then G updates.

    Args:
        generator: maps (B, z_dim) noise to (B, C, S, S) images; has a `z_dim` attribute.
        discriminator: maps (B, C, S, S) images to (B,) logits.
        objective: losses and input-side mitigations.
        evaluate: `evaluate(generator, discriminator, ctx)` after every period (eval mode, no_grad).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, objective: Objective,
                 evaluate: Evaluate | None = None):
        self.generator, self.discriminator, self.objective = generator, discriminator, objective
        self.evaluate_fn = evaluate

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def make_optimizers(self, cfg: GanTrainConfig) -> dict[str, torch.optim.Optimizer]:
        adam = lambda m, lr: torch.optim.Adam(m.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2),  # noqa: E731
                                              weight_decay=cfg.weight_decay)
        return {"d": adam(self.discriminator, cfg.lr_d), "g": adam(self.generator, cfg.lr_g)}

    def _noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.generator.z_dim, device=device)  # (B, z_dim)

    def d_update(self, real: torch.Tensor, noise_std: float, ctx: StepContext) -> dict[str, float]:
        with torch.no_grad():
            fake = self.generator(self._noise(len(real), real.device))  # (B, C, S, S)
        real_logits = self.discriminator(self.objective.d_input(real, noise_std))  # (B,)
        fake_logits = self.discriminator(self.objective.d_input(fake, noise_std))  # (B,)
        loss = d_loss(real_logits, fake_logits, 1.0 - self.objective.label_smoothing)
        norm = ctx.update("d", loss, grad_norm=True)
        return {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                "d_fake": torch.sigmoid(fake_logits).mean().item(), "d_grad_norm": norm}

    def g_update(self, batch_size: int, noise_std: float, ctx: StepContext) -> dict[str, float]:
        fake = self.generator(self._noise(batch_size, ctx.device))  # (B, C, S, S)
        fake_logits = self.discriminator(self.objective.d_input(fake, noise_std))  # (B,)
        loss = g_loss(fake_logits, self.objective.non_saturating)
        norm = ctx.update("g", loss, grad_norm=True)
        return {"g_loss": loss.item(), "g_grad_norm": norm}

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """`d_steps` D updates then `g_steps` G updates; the last values of each are returned."""
        reals = ctx.to_device(batch[0]).split(ctx.cfg.batch_size)  # d_steps x (B, C, S, S)
        noise_std = self.objective.instance_noise * (1 - ctx.fraction)  # annealed linearly to 0
        for real in reals:
            record = self.d_update(real, noise_std, ctx)
        for _ in range(ctx.cfg.g_steps):
            record.update(self.g_update(len(reals[-1]), noise_std, ctx))
        return record

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        return self.evaluate_fn(self.generator, self.discriminator, ctx)
