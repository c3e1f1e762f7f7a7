"""`vae`: a variational autoencoder on handwritten digits (ATML task 4).

Trains a VAE (MLP or small conv encoder/decoder, Bernoulli pixels, Gaussian latent) by
maximising the ELBO through the loop core (`VAETrainer`), then measures on the best checkpoint:
the ELBO and its two terms (reconstruction cross-entropy, KL) on train/val/test, and the
importance-sampled IWAE bound with `eval.iwae_k` samples: an estimate of the test
log-likelihood on binary pixels (`data.binarize`), a tighter bound on the Bernoulli score
(not a likelihood) on grey ones.
It saves reconstructions, samples from the prior, latent interpolations, the latent map of
the test set and, for a 2-D latent, the decoded manifold. `--sweep model.latent_dim=2,10,20`
compares latent sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from syllabus.config import choice, nested, ranged
from syllabus.data.digits import DigitsDataset, digits_splits, mnist_splits, require_digits_data
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, register
from syllabus.experiments.vae_report import PICTURES, SPLITS, TERMS, report_sections, sweep_sections
from syllabus.nn.vae import ARCHS, VAE, elbo_terms, gaussian_kl, iwae_bound, log_importance_weights
from syllabus.runs import Run, is_main_process
from syllabus.train import StepContext, TrainConfig, Trainer, fit, fit_summary, load_best, seed_everything

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. (2016): unit d is active if Var_x(E_q[z_d]) > 0.01


@dataclass
class DataConfig:
    name: str = choice("digits", ["digits", "mnist"])
    size: int = ranged(8, 4)  # image side; digits are 8x8 and MNIST 28x28, resized when different
    root: str = ""  # MNIST folder (default: $SYLLABUS_DATA/mnist)
    binarize: bool = False  # one fixed Bernoulli draw per pixel: a normalised Bernoulli likelihood
    seed: int = 0  # split seed (and binarisation seed)


@dataclass
class ModelConfig:
    arch: str = choice("mlp", list(ARCHS))
    latent_dim: int = ranged(2, 1)
    hidden: tuple[int, ...] = ranged((256, 128), 1)  # mlp: encoder widths (decoder mirrored)
    channels: tuple[int, ...] = ranged((32, 64), 1)  # conv: channels after each stride-2 convolution


@dataclass
class EvalConfig:
    iwae_k: int = ranged(1000, 1)  # importance samples per test image for the log-likelihood estimate
    batch_size: int = ranged(256, 1)
    n_images: int = ranged(32, 1)  # reconstructions and prior samples shown
    interp_pairs: int = ranged(6, 1)  # test pairs interpolated in latent space
    interp_steps: int = ranged(8, 2)  # decoded points between (and including) the two ends
    manifold: int = ranged(15, 2)  # the decoded grid of a 2-D latent is manifold x manifold


@dataclass
class Config:
    data: DataConfig = nested(DataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: TrainConfig = nested(TrainConfig)
    eval: EvalConfig = nested(EvalConfig)
    seed: int = 0


def _adam(lr: float = 1e-3, **kw: Any) -> TrainConfig:
    return TrainConfig(optimizer="adam", lr=lr, weight_decay=0.0, schedule="constant", monitor="val/elbo",
                       monitor_mode="max", **kw)


def smoke() -> Config:
    return Config(model=ModelConfig(hidden=(64,)), train=_adam(epochs=2, batch_size=64, max_steps=8, log_every=4),
                  eval=EvalConfig(iwae_k=16, n_images=8, interp_pairs=2, interp_steps=4, manifold=5))


def quick() -> Config:
    """The embedded digits at their own 8x8 resolution, a 2-D latent, a few seconds of Adam.

    8x8 rather than resized to 16x16: upsampling adds no information, only interpolated pixels
    whose cross-entropy would dominate the nats, and costs four times as much per step.
    """
    return Config(train=_adam(epochs=80, batch_size=128, lr=3e-3, log_every=0))


def full() -> Config:
    """Binarised MNIST 28x28, latent 20, MLP 512-256, Adam 1e-3, batch 128, 50 epochs."""
    return Config(data=DataConfig(name="mnist", size=28, binarize=True),
                  model=ModelConfig(latent_dim=20, hidden=(512, 256)),
                  train=_adam(epochs=50, batch_size=128, log_every=100), eval=EvalConfig(iwae_k=1000))


# --------------------------------------------------------------------------- data, model, checks


def check(cfg: Config) -> None:
    """Fail before training on missing MNIST or settings the model cannot take."""
    require_digits_data(cfg.data.name, cfg.data.root or None)
    if cfg.model.arch == "conv":
        depth = len(cfg.model.channels)
        if depth == 0 or cfg.data.size % 2**depth:
            raise UsageError(f"model.arch=conv halves the image {depth} times (model.channels); "
                             f"data.size={cfg.data.size} must be a multiple of {2**depth} and channels non-empty")


def load_splits(cfg: DataConfig) -> dict[str, DigitsDataset]:
    """train/val/test images (N, 1, S, S) in [0, 1], binarised once when asked."""
    if cfg.name == "mnist":
        splits = mnist_splits(cfg.root or None, size=cfg.size, seed=cfg.seed)
    else:
        splits = digits_splits(size=cfg.size, seed=cfg.seed)
    if not cfg.binarize:
        return splits
    gen = torch.Generator().manual_seed(cfg.seed)
    return {s: DigitsDataset(torch.bernoulli(splits[s].images, generator=gen), splits[s].targets) for s in SPLITS}


def is_binary(images: torch.Tensor) -> bool:
    """Whether every pixel is 0 or 1: only then is the Bernoulli p(x|z) a normalised likelihood of the data."""
    return bool(((images == 0) | (images == 1)).all())


def build_model(cfg: Config, summary: dict | None = None) -> VAE:
    m = cfg.model
    widths = m.hidden if m.arch == "mlp" else m.channels
    return ARCHS[m.arch](cfg.data.size, m.latent_dim, widths)


# --------------------------------------------------------------------------- the trainer for the loop core


@torch.no_grad()
def elbo_means(model: VAE, loader: Iterable) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL per image over `loader`, and the loss (minus the ELBO)."""
    device = _device(model)
    sums, n = dict.fromkeys(TERMS, 0.0), 0
    for batch in loader:
        x = batch[0].to(device)  # (B, 1, S, S)
        logits, mu, logvar = model(x)
        terms = elbo_terms(logits.float(), x, mu.float(), logvar.float())
        for k in TERMS:
            sums[k] += float(terms[k].sum())
        n += len(x)
    means = {k: v / max(n, 1) for k, v in sums.items()}
    return {"loss": -means["elbo"], **means}


class VAETrainer(Trainer):
    """Minus the mean ELBO as the loss; ELBO, reconstruction and KL per image as metrics.

    Args:
        model: the VAE.
        val_loader: the validation batches `evaluate` scores.
    """

    def __init__(self, model: VAE, val_loader: Iterable):
        self.model, self.val_loader = model, val_loader

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        x = ctx.to_device(batch[0])  # (B, 1, S, S)
        logits, mu, logvar = self.model(x)
        terms = elbo_terms(logits, x, mu, logvar)  # each (B,)
        loss = -terms["elbo"].mean()
        ctx.update("main", loss)
        return {"loss": loss.item(), **{k: terms[k].mean().item() for k in TERMS}}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        return elbo_means(self.model, self.val_loader)


# --------------------------------------------------------------------------- evaluation of the best model


def _loader(ds: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_splits(model: VAE, splits: dict[str, Dataset], ecfg: EvalConfig) -> dict:
    """ELBO, reconstruction and KL per split, as `splits` and flat `split/term` keys."""
    out: dict = {"splits": {}}
    for s in SPLITS:
        metrics = elbo_means(model, _loader(splits[s], ecfg.batch_size))
        out["splits"][s] = metrics
        out.update({f"{s}/{k}": metrics[k] for k in TERMS})
    return out


def _k_ladder(k: int) -> list[int]:
    """1, 10, 100, ... below k, then k."""
    return sorted({10**i for i in range(len(str(k))) if 10**i < k} | {k})


def iwae_estimates(model: VAE, ds: Dataset, ecfg: EvalConfig) -> dict:
    """Mean IWAE bound of the test set for k = 1, 10, ..., iwae_k (nested draws of one run)."""
    ks = _k_ladder(ecfg.iwae_k)
    sums = dict.fromkeys(ks, 0.0)
    batch = max(1, min(ecfg.batch_size, 65536 // ecfg.iwae_k))
    for x, _ in _loader(ds, batch):
        log_w = log_importance_weights(model, x.to(_device(model)), ecfg.iwae_k)  # (k, B)
        for k in ks:
            sums[k] += float(iwae_bound(log_w[:k]).sum())
    by_k = {str(k): v / len(ds) for k, v in sums.items()}
    return {"test/iwae": by_k[str(ecfg.iwae_k)], "iwae_k": ecfg.iwae_k, "iwae_by_k": by_k}


@torch.no_grad()
def encode_all(model: VAE, ds: Dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and logvar of q(z|x) for every image of `ds`: (N, d) each, on the CPU."""
    parts = [model.encode(x.to(_device(model))) for x, _ in _loader(ds, batch_size)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


def latent_stats(mu: torch.Tensor, logvar: torch.Tensor) -> dict:
    """Mean KL per latent dimension and the number of active units (Burda et al., 2016)."""
    return {"kl_per_dim": gaussian_kl(mu, logvar).mean(0).tolist(),
            "active_units": int((mu.var(0) > ACTIVE_UNIT_VARIANCE).sum()) if len(mu) > 1 else 0}


def latent_map(mu: torch.Tensor) -> tuple[np.ndarray, str]:
    """2-D coordinates of the latent means: the means themselves for d = 2, else their PCA."""
    if mu.shape[1] == 1:
        return np.concatenate([mu.numpy(), np.zeros_like(mu.numpy())], 1), "latent means (z1; the y axis is empty)"
    if mu.shape[1] == 2:
        return mu.numpy(), "latent means (z1, z2)"
    from sklearn.decomposition import PCA

    pca = PCA(2, random_state=0).fit(mu.numpy())
    share = pca.explained_variance_ratio_.sum()
    return pca.transform(mu.numpy()), f"PCA of the {mu.shape[1]}-D latent means ({share:.0%} of their variance)"


def _pixels(model: VAE, z: torch.Tensor) -> np.ndarray:
    """Decoded pixel means sigmoid(logits) of (..., d) latents: (..., S, S) on the CPU."""
    return model.decode(z.to(_device(model))).sigmoid()[..., 0, :, :].cpu().numpy()


def _interp_pairs(labels: torch.Tensor, n: int) -> list[tuple[int, int]]:
    """n pairs (first test image of digit i, first of digit i + 5), over the classes present."""
    first = {int(c): int((labels == c).nonzero()[0]) for c in labels.unique()}
    classes = sorted(first)
    return [(first[classes[i % len(classes)]], first[classes[(i + 5) % len(classes)]]) for i in range(n)]


@torch.no_grad()
def pictures(model: VAE, ds: DigitsDataset, mu: torch.Tensor, ecfg: EvalConfig, seed: int) -> dict[str, np.ndarray]:
    """The arrays behind the image plots: inputs and reconstructions (decoded at the posterior
    mean), prior samples, interpolations (ends are the real images), and the 2-D manifold."""
    n = min(ecfg.n_images, len(ds))
    out = {"inputs": ds.images[:n, 0].numpy(), "recons": _pixels(model, mu[:n]),
           "samples": model.sample(ecfg.n_images, torch.Generator().manual_seed(seed))[:, 0].cpu().numpy()}
    pairs = _interp_pairs(ds.targets, ecfg.interp_pairs)
    a, b = (torch.tensor([p[i] for p in pairs]) for i in (0, 1))
    t = torch.linspace(0, 1, ecfg.interp_steps)[None, :, None]  # (1, T, 1)
    between = _pixels(model, mu[a][:, None] * (1 - t) + mu[b][:, None] * t)  # (P, T, S, S)
    out["interp"] = np.concatenate([ds.images[a, 0, None].numpy(), between, ds.images[b, 0, None].numpy()], 1)
    if model.latent_dim == 2:
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, ecfg.manifold))
        z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1)  # (M, M, 2): z2 up, z1 right
        out["manifold"], out["manifold_q"] = _pixels(model, z), q.numpy()
    return out


def run(cfg: Config, run: Run) -> dict:
    seed_everything(cfg.seed)
    splits = load_splits(cfg.data)
    model = build_model(cfg)
    trainer = VAETrainer(model, _loader(splits["val"], cfg.eval.batch_size))
    train_loader = DataLoader(splits["train"], batch_size=cfg.train.batch_size, shuffle=True)
    result = fit(trainer, train_loader, cfg.train, run, seed=cfg.seed)
    load_best(run, {"model": model})
    model.eval()
    seed_everything(cfg.seed)
    summary = evaluate_splits(model, splits, cfg.eval)
    summary.update(iwae_estimates(model, splits["test"], cfg.eval))
    mu, logvar = encode_all(model, splits["test"], cfg.eval.batch_size)
    coords, how = latent_map(mu)
    arrays = pictures(model, splits["test"], mu, cfg.eval, cfg.seed)
    if is_main_process():
        np.savez_compressed(run.path / PICTURES, latent=coords, labels=splits["test"].targets.numpy(), **arrays)
    summary.update(
        latent_stats(mu, logvar), **fit_summary(result, run, trainer), latent_map=how,
        binary_pixels=is_binary(splits["test"].images),
        iwae_gap=summary["test/iwae"] - summary["test/elbo"],
        latent_dim=cfg.model.latent_dim, arch=cfg.model.arch, data=cfg.data.name, image_size=cfg.data.size,
        sizes={s: len(splits[s]) for s in SPLITS},
    )
    run.save_summary(summary)
    return summary



register(Experiment(
    name="vae",
    title="Variational autoencoder on digits: ELBO terms, samples, interpolation, latent map, IWAE",
    profiles={"smoke": smoke, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    build_model=build_model,
    check=check,
    headline=["test/elbo", "test/iwae", "test/recon", "test/kl", "active_units", "time_per_epoch"],
    key_figure="samples",
    default_sweep={"model.latent_dim": "2,10"},
    monitors=("val/elbo", "val/loss", "val/recon", "val/kl"),
    budget_s=35,  # quick, measured in `run all` (one thread, beside another job)
))
