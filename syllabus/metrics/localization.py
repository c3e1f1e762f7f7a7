"""How well a saliency map finds the object, given the object's mask (NumPy only).

Two scores per image, for maps (N, H, W) >= 0 and boolean masks (N, H, W):

- energy in mask: sum(map * mask) / sum(map), the share of the map's mass on the object
  (the "energy-based pointing game" of Score-CAM, Wang et al. 2020);
- pointing game (Zhang et al. 2016, without tolerance): is the map's maximum on the object?
  When several pixels tie for the maximum the score is the share of them on the object,
  the expected hit of picking one at random, so a flat map scores the mask's area.

A map that is zero everywhere carries no information and is scored as a flat map.
The two baselines are maps that ignore the image: `uniform_map` (energy = pointing = the
mask's area fraction) and `centre_gaussian` (the photographer's bias: objects tend to sit
in the middle).
"""

from __future__ import annotations

import numpy as np

TIE_RTOL = 1e-6  # pixels within this relative distance of the maximum tie with it


def _check(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = np.asarray(maps, np.float64), np.asarray(masks).astype(bool)
    maps, masks = np.broadcast_arrays(maps, masks)  # a single (H, W) baseline map scores every mask
    if maps.ndim != 3:
        raise ValueError(f"expected (N, H, W) maps and masks, got shape {maps.shape}")
    if (maps < 0).any():
        raise ValueError("saliency maps must be non-negative")
    return maps, masks


def _flat_if_empty(maps: np.ndarray) -> np.ndarray:
    """Replace all-zero maps by a constant map. (N, H, W) -> (N, H, W)."""
    empty = maps.reshape(len(maps), -1).max(1) == 0  # (N,)
    return np.where(empty[:, None, None], 1.0, maps)


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside its mask. (N, H, W), (N, H, W) -> (N,) in [0, 1]."""
    maps, masks = _check(maps, masks)
    maps = _flat_if_empty(maps)
    return (maps * masks).sum((1, 2)) / maps.sum((1, 2))


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's maximal pixels inside its mask (1 or 0 for a unique maximum). -> (N,)."""
    maps, masks = _check(maps, masks)
    maps = _flat_if_empty(maps)
    peak = maps >= maps.max((1, 2), keepdims=True) * (1 - TIE_RTOL)  # (N, H, W)
    return (peak & masks).sum((1, 2)) / peak.sum((1, 2))


def empty_maps(maps: np.ndarray) -> np.ndarray:
    """Which maps are zero everywhere. (N, H, W) -> (N,) bool."""
    maps = np.asarray(maps)
    return maps.reshape(len(maps), -1).max(1) == 0


def uniform_map(height: int, width: int) -> np.ndarray:
    """The flat baseline. (H, W) of ones."""
    return np.ones((height, width))


def centre_gaussian(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """exp(-d^2 / 2 s^2) around the image centre, s = `sigma` times the side. (H, W), peak 1."""
    y = (np.arange(height) - (height - 1) / 2) / (sigma * height)  # (H,)
    x = (np.arange(width) - (width - 1) / 2) / (sigma * width)  # (W,)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def localization_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Both scores of each map: {"energy": (N,), "pointing": (N,)}."""
    return {"energy": energy_in_mask(maps, masks), "pointing": pointing_game(maps, masks)}


def baseline_scores(masks: np.ndarray, sigma: float = 0.25) -> dict[str, dict[str, np.ndarray]]:
    """The scores of the two image-blind baselines on each mask: {"uniform": ..., "gaussian": ...}."""
    _, h, w = np.shape(masks)
    return {"uniform": localization_scores(uniform_map(h, w), masks),
            "gaussian": localization_scores(centre_gaussian(h, w, sigma), masks)}


def mean_and_halfwidth(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval (NaN, NaN when empty)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    sem = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(z * sem)


def difference_interval(a: np.ndarray, b: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch 95% interval (low, high); NaNs when either has < 2 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan"), float("nan")
    diff = a.mean() - b.mean()
    half = z * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return float(diff), float(diff - half), float(diff + half)
