"""Segmentations without learning, scored like the slots: the floor object discovery must clear.

Public API:
    BASELINES: name -> function(images (B, 3, H, W) in [0, 1], k, seed) -> ids (B, H, W) int64
        "one segment": every pixel in one segment
        "k-means colour": scikit-learn k-means of each image's pixel colours into k clusters
        "k-means colour+position": the same on (r, g, b, y, x), coordinates scaled to [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.cluster import KMeans


def one_segment(images: torch.Tensor, k: int = 1, seed: int = 0) -> torch.Tensor:
    """All pixels in segment 0. (B, H, W)."""
    b, _, h, w = images.shape
    return torch.zeros(b, h, w, dtype=torch.long)


def _kmeans_per_image(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Features (B, N, F) -> cluster ids (B, N), one k-means per image."""
    return np.stack([KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(f) for f in features])


def kmeans_colour(images: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """k-means of pixel colours. (B, 3, H, W) -> (B, H, W)."""
    b, c, h, w = images.shape
    colours = images.permute(0, 2, 3, 1).reshape(b, h * w, c).double().numpy()  # (B, N, 3)
    return torch.from_numpy(_kmeans_per_image(colours, k, seed)).long().reshape(b, h, w)


def kmeans_colour_position(images: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """k-means of (r, g, b, y, x), all in [0, 1]. (B, 3, H, W) -> (B, H, W)."""
    b, c, h, w = images.shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")  # (H, W) each
    pos = torch.stack([yy, xx]).expand(b, -1, -1, -1)  # (B, 2, H, W)
    feats = torch.cat([images, pos], 1).permute(0, 2, 3, 1).reshape(b, h * w, c + 2).double().numpy()
    return torch.from_numpy(_kmeans_per_image(feats, k, seed)).long().reshape(b, h, w)


BASELINES: dict[str, Callable[[torch.Tensor, int, int], torch.Tensor]] = {
    "one segment": one_segment,
    "k-means colour": kmeans_colour,
    "k-means colour+position": kmeans_colour_position,
}
