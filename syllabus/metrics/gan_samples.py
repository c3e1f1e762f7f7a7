"""Measures of a generator's samples through a digit classifier, and of a discriminator's view.

- classes covered (classes given at least a minimum share of the samples) and
  KL(class histogram || uniform): mode collapse, measured;
- the Fréchet distance between generated and held-out real images in the classifier's
  penultimate features (not Inception FID);
- mean D(x) on D's training images and on held-out images: their gap is D overfitting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from syllabus.metrics.frechet import frechet_distance, gaussian_stats


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) integer labels -> (K,) shares summing to 1."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1)


def classes_covered(hist: np.ndarray, min_share: float) -> int:
    """Classes holding at least `min_share` of the samples."""
    return int((np.asarray(hist) >= min_share).sum())


def kl_to_uniform(hist: np.ndarray) -> float:
    """KL(p || uniform) = sum_k p_k log(K p_k): 0 for a uniform histogram, log K for a single class."""
    p = np.asarray(hist, dtype=np.float64)
    nz = p > 0
    return float((p[nz] * np.log(len(p) * p[nz])).sum())


class SampleEvaluator:
    """Measures a generator's fixed-noise samples and a discriminator's view of real images.

    Args:
        classifier: digit classifier with `forward_features`, `pool` and `fc` (a `ResNet`).
        heldout: (M, C, S, S) real images the Fréchet distance compares against.
        d_train: real images D is trained on; d_heldout: real images it never sees (1,000 of each used).
        z_dim: generator input size.
        n_samples: generated images measured per evaluation (fixed noise).
        min_share: a class is covered when it gets at least this share of the samples.
        batch_size: batch in which D sees images (minibatch statistics depend on it).
        seed: seed of the fixed noise.
    """

    def __init__(self, classifier: nn.Module, heldout: torch.Tensor, d_train: torch.Tensor,
                 d_heldout: torch.Tensor, z_dim: int, n_samples: int, min_share: float, batch_size: int,
                 seed: int):
        self.clf, self.min_share, self.batch_size = classifier, min_share, batch_size
        self.d_train, self.d_heldout = d_train[:1000], d_heldout[:1000]
        self.noise = torch.randn(n_samples, z_dim, generator=torch.Generator().manual_seed(seed + 1))
        self.num_classes = classifier.fc.out_features
        feats, _ = self.features(heldout)
        self.reference = gaussian_stats(feats)  # mu (F,), sigma (F, F)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, S, S) -> penultimate classifier features (N, F) and predicted labels (N,)."""
        device = next(self.clf.parameters()).device
        feats, labels = [], []
        for x in images.split(256):
            f = self.clf.pool(self.clf.forward_features(x.to(device))).flatten(1)  # (B, F)
            feats.append(f.cpu()), labels.append(self.clf.fc(f).argmax(1).cpu())
        return torch.cat(feats).numpy(), torch.cat(labels).numpy()

    def real_floor(self, images: torch.Tensor) -> float:
        """Fréchet distance of real `images` to the held-out reference: the floor of the measure."""
        return frechet_distance(*gaussian_stats(self.features(images)[0]), *self.reference)

    @torch.no_grad()
    def d_mean(self, discriminator: nn.Module, images: torch.Tensor) -> float:
        device = next(discriminator.parameters()).device
        probs = [torch.sigmoid(discriminator(x.to(device))).cpu() for x in images.split(self.batch_size)]
        return float(torch.cat(probs).mean())

    @torch.no_grad()
    def samples(self, generator: nn.Module) -> torch.Tensor:
        device = next(generator.parameters()).device
        return torch.cat([generator(z.to(device)).cpu() for z in self.noise.split(500)])  # (N, C, S, S)

    def __call__(self, generator: nn.Module, discriminator: nn.Module) -> tuple[dict, torch.Tensor, np.ndarray]:
        """Metrics of one evaluation, the samples (N, C, S, S), and their class histogram (K,)."""
        fake = self.samples(generator)
        feats, labels = self.features(fake)
        hist = class_histogram(labels, self.num_classes)
        d_train, d_heldout = self.d_mean(discriminator, self.d_train), self.d_mean(discriminator, self.d_heldout)
        metrics = {"classes_covered": classes_covered(hist, self.min_share), "kl_uniform": kl_to_uniform(hist),
                   "frechet": frechet_distance(*gaussian_stats(feats), *self.reference),
                   "d_train_real": d_train, "d_heldout_real": d_heldout, "d_gap": d_train - d_heldout}
        return metrics, fake, hist
