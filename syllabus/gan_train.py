"""The GAN training loop: a generator and a discriminator, each with its own optimizer.

Every generator update is preceded by `d_steps` discriminator updates (Goodfellow et al.
2014, Algorithm 1). Every step logs D's and G's losses, the mean D(x) and D(G(z)) and
the gradient norms of both networks to metrics.jsonl.

Training runs in periods of `eval_every` steps (a period plays the part of an epoch in
`syllabus.train.fit`, whose per-epoch seeding it copies): each period is seeded from
(seed, period), then evaluated by the caller's `evaluate`, logged and checkpointed.
Resuming loads `last.pt` and continues with the next period, so an interrupted and
resumed run ends exactly where an uninterrupted one does. The loop runs on one device
(`--device`); the networks are small enough that several GPUs would not help.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from syllabus.errors import RunFailed, UsageError
from syllabus.nn.gan import diff_augment
from syllabus.runs import Run
from syllabus.train import make_accelerator, seed_everything


@dataclass
class GanTrainConfig:
    """Optimisation settings of the GAN loop."""

    steps: int = 3000  # generator updates
    eval_every: int = 250  # steps per period (evaluation, sample grid, checkpoint)
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5  # Adam's beta1, 0.5 as in DCGAN
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update
    g_steps: int = 1  # generator updates per step (each on fresh noise)


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


# --------------------------------------------------------------------------- losses on logits


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


def grad_norm(module: nn.Module) -> float:
    """Global L2 norm of the gradients of `module`'s parameters."""
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


# --------------------------------------------------------------------------- one step


class GanStep:
    """The discriminator and generator updates of one training step.

    Args:
        generator: maps (B, z_dim) noise to (B, C, S, S) images; has a `z_dim` attribute.
        discriminator: maps (B, C, S, S) images to (B,) logits.
        cfg: learning rates, betas and update counts.
        objective: losses and input-side mitigations.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, cfg: GanTrainConfig, objective: Objective):
        self.g, self.d, self.cfg, self.obj = generator, discriminator, cfg, objective
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=betas)

    def _noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.g.z_dim, device=device)  # (B, z_dim)

    def _d_input(self, x: torch.Tensor, noise_std: float) -> torch.Tensor:
        """What D sees of an image batch: augmented and/or noised, differentiably."""
        if self.obj.diffaug:
            x = diff_augment(x)
        if noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        return x

    def d_update(self, real: torch.Tensor, noise_std: float) -> dict[str, float]:
        with torch.no_grad():
            fake = self.g(self._noise(len(real), real.device))  # (B, C, S, S)
        real_logits = self.d(self._d_input(real, noise_std))  # (B,)
        fake_logits = self.d(self._d_input(fake, noise_std))  # (B,)
        loss = d_loss(real_logits, fake_logits, 1.0 - self.obj.label_smoothing)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(self.d)
        self.opt_d.step()
        return {"d_loss": loss.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
                "d_fake": torch.sigmoid(fake_logits).mean().item(), "d_grad_norm": norm}

    def g_update(self, batch_size: int, noise_std: float, device: torch.device) -> dict[str, float]:
        fake_logits = self.d(self._d_input(self.g(self._noise(batch_size, device)), noise_std))  # (B,)
        loss = g_loss(fake_logits, self.obj.non_saturating)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(self.g)
        self.opt_g.step()
        return {"g_loss": loss.item(), "g_grad_norm": norm}

    def __call__(self, reals: list[torch.Tensor], noise_std: float) -> dict[str, float]:
        """`d_steps` D updates (one real batch each), then `g_steps` G updates; the last values of each."""
        for real in reals:
            record = self.d_update(real, noise_std)
        for _ in range(self.cfg.g_steps):
            record.update(self.g_update(len(reals[-1]), noise_std, reals[-1].device))
        return record

    def state_dict(self) -> dict:
        return {"generator": self.g.state_dict(), "discriminator": self.d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["generator"])
        self.d.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


# --------------------------------------------------------------------------- the loop


def real_batches(n_images: int, n_batches: int, batch_size: int) -> torch.Tensor:
    """(n_batches, batch_size) indices: successive random permutations of the images, cut into batches.

    Works for a training set smaller than one batch (the overfitting scenario's few images).
    """
    need = n_batches * batch_size
    perms = [torch.randperm(n_images) for _ in range(-(-need // n_images))]
    return torch.cat(perms)[:need].view(n_batches, batch_size)


def fit_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    images: torch.Tensor,
    cfg: GanTrainConfig,
    objective: Objective,
    run: Run,
    *,
    seed: int = 0,
    evaluate: Callable[[nn.Module, nn.Module, int], dict] | None = None,
    on_period_end: Callable[[int, dict], None] | None = None,
) -> GanStep:
    """Train the pair on `images` (N, C, S, S) in [-1, 1]; resumes from `run`'s last.pt.

    Args:
        evaluate: called with (generator, discriminator, step) after each period, under
            `torch.no_grad`, both networks in eval mode; its dict joins the period's record.
        on_period_end: called with (period, record) after the period's checkpoint is saved.

    Returns:
        The `GanStep` holding the trained networks and their optimizers.
    """
    device = make_accelerator(run.device).device
    generator.to(device), discriminator.to(device)
    step = GanStep(generator, discriminator, cfg, objective)
    done = _resume(run, step)
    periods = -(-cfg.steps // cfg.eval_every)
    for period in range(done + 1, periods + 1):
        seed_everything(seed * 100_003 + period)
        first = (period - 1) * cfg.eval_every
        last = min(period * cfg.eval_every, cfg.steps)
        start = time.perf_counter()
        _train_period(step, images, cfg, run, period, range(first, last))
        record = {"epoch": period, "step": last, "time/period": time.perf_counter() - start}
        record.update(_evaluate(generator, discriminator, last, evaluate))
        run.log(record)
        run.save_checkpoint("last", {**step.state_dict(), "period": period, "step": last})
        print(_period_line(record, cfg))
        if on_period_end is not None:
            on_period_end(period, record)
    return step


def _resume(run: Run, step: GanStep) -> int:
    state = run.load_checkpoint("last")
    if state is None:
        return 0
    period, done, cfg = state["period"], state["step"], step.cfg
    if done < cfg.steps and done != period * cfg.eval_every:
        raise UsageError(f"cannot resume {run.path} at step {done} with train.eval_every={cfg.eval_every}: "
                         f"its {period} periods do not line up; keep the run's own train.eval_every")
    step.load_state_dict(state)
    run.truncate_metrics(period)
    print(f"resuming {run.path} after period {period} (step {done})")
    return period


def _train_period(step: GanStep, images: torch.Tensor, cfg: GanTrainConfig, run: Run, period: int,
                  steps: range) -> None:
    device = next(step.g.parameters()).device
    index = real_batches(len(images), len(steps) * cfg.d_steps, cfg.batch_size).to(images.device)
    step.g.train(), step.d.train()
    for i, s in enumerate(tqdm(steps, desc=f"steps {steps.start + 1}-{steps.stop}", leave=False, disable=None)):
        reals = [images[j].to(device) for j in index[i * cfg.d_steps:(i + 1) * cfg.d_steps]]
        noise_std = step.obj.instance_noise * (1 - s / cfg.steps)  # annealed linearly to 0
        record = step(reals, noise_std)
        if not all(math.isfinite(v) for v in record.values()):
            raise RunFailed(f"a GAN loss became non-finite at step {s + 1} ({record}); stopped. "
                            f"The last good checkpoint is {run.checkpoint('last')} (lower train.lr_g / lr_d?)")
        run.log({"epoch": period, "step": s + 1, **record})


def _evaluate(generator: nn.Module, discriminator: nn.Module, step: int, evaluate) -> dict:
    if evaluate is None:
        return {}
    generator.eval(), discriminator.eval()
    with torch.no_grad():
        out = evaluate(generator, discriminator, step)
    generator.train(), discriminator.train()
    return out


def _period_line(record: dict, cfg: GanTrainConfig) -> str:
    parts = [f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "step") and isinstance(v, (int, float))]
    return f"step {record['step']}/{cfg.steps}  " + "  ".join(parts)
