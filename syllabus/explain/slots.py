"""Compositional generation from a slot library, and the feature spaces its Fréchet distance uses.

Public API:
    collect_slots(encoder, images, batch_size=64) -> (M K, D) every slot of every image
    cluster_slots(library, k, seed=0) -> (labels (M K,), centres (k, D)) with scikit-learn's k-means
    compose_slot_sets(library, labels, n, k, generator) -> (n, k, D): one slot drawn from each cluster
    decode_images(model, slots, batch_size=64) -> (n, 3, H, W) the decoder's images
    feature_space(prefer_inception=True) -> FeatureSpace: ``.name``, ``.is_inception``,
        ``.features(images in [0, 1]) -> (N, F)``; clean-fid's Inception (``mode="clean"``)
        when its weights are on disk, else a fixed random CNN, labelled as not Inception
    frechet_to(space, images, reference) -> Fréchet distance between the two sets' features
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from syllabus.metrics.frechet import fid_from_features

INCEPTION_WEIGHTS = Path("/tmp/inception-2015-12-05.pt")  # where clean-fid keeps them on Linux


@torch.no_grad()
def collect_slots(encoder: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode (M, 3, H, W) images (already normalised for the encoder) -> (M K, D) slots."""
    device = next(encoder.parameters()).device
    slots = [encoder(images[i: i + batch_size].to(device))[0].cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(slots).flatten(0, 1)


def cluster_slots(library: torch.Tensor, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the slot library into ``k`` clusters: labels (M,), centres (k, D)."""
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(library.double().numpy())
    return km.labels_, km.cluster_centers_


def compose_slot_sets(library: torch.Tensor, labels: np.ndarray, n: int, k: int,
                      generator: torch.Generator) -> torch.Tensor:
    """``n`` new slot sets, each with one member of each of the ``k`` clusters, drawn uniformly. (n, k, D)."""
    members = [torch.from_numpy(np.flatnonzero(labels == c)) for c in range(k)]
    if any(len(m) == 0 for m in members):
        raise ValueError("every cluster needs at least one slot")
    picks = [m[torch.randint(len(m), (n,), generator=generator)] for m in members]  # k x (n,)
    return library[torch.stack(picks, 1)]  # (n, k, D)


@torch.no_grad()
def decode_images(model: nn.Module, slots: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode (n, K, D) slot sets with ``model.decode`` -> (n, 3, H, W) images."""
    device = next(model.parameters()).device
    out = [model.decode(slots[i: i + batch_size].to(device))["recon"].cpu() for i in range(0, len(slots), batch_size)]
    return torch.cat(out)


class RandomConvFeatures(nn.Module):
    """A fixed, randomly initialised CNN (seed 0) whose pooled activations stand in for Inception offline.

    Three conv stages of 64, 128, 256 channels; the features are the spatial means and
    standard deviations of each stage (896 values). Distances in this space rank sets of
    images but are not comparable with published FIDs.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = (3, 64, 128, 256)
        self.stages = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        for conv in self.stages:
            fan_in = conv.in_channels * 9
            conv.weight.data = torch.randn(conv.weight.shape, generator=g) * (2 / fan_in) ** 0.5
            conv.bias.data.zero_()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> (B, 896)."""
        x, feats = (images - 0.5) / 0.25, []
        for conv in self.stages:
            x = torch.relu(conv(x))
            feats += [x.mean((2, 3)), x.std((2, 3))]
        return torch.cat(feats, 1)


@dataclass
class FeatureSpace:
    name: str
    is_inception: bool
    extract: Callable[[torch.Tensor], np.ndarray]

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 100) -> np.ndarray:
        """Images (N, 3, H, W) in [0, 1] -> (N, F) float64."""
        return np.concatenate([self.extract(images[i: i + batch_size]) for i in range(0, len(images), batch_size)])


def _inception_space() -> FeatureSpace:
    from cleanfid.features import build_feature_extractor
    from cleanfid.resize import build_resizer

    model = build_feature_extractor("clean", device=torch.device("cpu"), use_dataparallel=False)
    resize = build_resizer("clean")

    def extract(images: torch.Tensor) -> np.ndarray:
        uint8 = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
        batch = torch.from_numpy(np.stack([resize(im) for im in uint8])).permute(0, 3, 1, 2)  # (B, 3, 299, 299)
        return model(batch).double().numpy()

    return FeatureSpace("Inception-v3 pool3 (clean-fid, mode=clean): FID", True, extract)


def feature_space(prefer_inception: bool = True) -> FeatureSpace:
    """clean-fid's Inception when its weights are present (nothing is downloaded), else a random CNN."""
    if prefer_inception and INCEPTION_WEIGHTS.is_file():
        return _inception_space()
    net = RandomConvFeatures(seed=0).eval()
    return FeatureSpace("fixed random-CNN features (seed 0): NOT Inception FID, offline stand-in", False,
                        lambda x: net(x.float()).double().numpy())


def frechet_to(space: FeatureSpace, images: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the two sets' features (images in [0, 1])."""
    return fid_from_features(space.features(images), space.features(reference))
