"""Patch masking: which patches a ViT can lose, and two ways to take them away.

A mask is (B, N) bool over the patch grid, True = masked. Patterns:

- random: exactly round(ratio * N) patches per image, drawn by a seeded generator;
- systematic (`PATTERNS`, each about half the patches): the centre square of side g/sqrt(2) and
  the border around it, the left/right and top/bottom halves, a checkerboard;
- ranked: the most-attended (or least-attended) round(ratio * N) patches of a given score.

Ways to remove them:

- replace: the patch's pixels are set to a fixed value per channel, the same for every image
  (the experiment uses black, "zero", and the dataset's mean colour, "mean"), given in the
  model's input space (after normalisation);
- drop: the patch tokens are not fed at all (the ViT sees 1 + N - M tokens).

Masking every patch leaves the model nothing of the image, so every image gets the same
prediction and accuracy falls to the share of that one class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

PATTERNS = ("centre", "border", "left", "right", "top", "bottom", "checkerboard")


def pattern_mask(name: str, grid: tuple[int, int]) -> torch.Tensor:
    """A systematic pattern on the grid. -> (gh, gw) bool, True = masked."""
    gh, gw = grid
    rows, cols = torch.arange(gh)[:, None], torch.arange(gw)[None, :]  # (gh, 1), (1, gw)
    side_h, side_w = round(gh / math.sqrt(2)), round(gw / math.sqrt(2))
    top, left = (gh - side_h) // 2, (gw - side_w) // 2
    centre = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    masks: dict[str, Callable[[], torch.Tensor]] = {
        "centre": lambda: centre,
        "border": lambda: ~centre,
        "left": lambda: (cols < gw // 2).expand(gh, gw),
        "right": lambda: (cols >= gw // 2).expand(gh, gw),
        "top": lambda: (rows < gh // 2).expand(gh, gw),
        "bottom": lambda: (rows >= gh // 2).expand(gh, gw),
        "checkerboard": lambda: (rows + cols) % 2 == 0,
    }
    if name not in masks:
        raise ValueError(f"unknown pattern {name!r}; valid: {', '.join(PATTERNS)}")
    return masks[name]().clone()


def count(ratio: float, n: int) -> int:
    """How many of n patches a ratio masks."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"masking ratio must be in [0, 1], got {ratio}")
    return round(ratio * n)


def random_mask(batch: int, n: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """round(ratio * n) random patches per image. -> (B, N) bool."""
    order = torch.rand(batch, n, generator=generator).argsort(1)  # (B, N) a random permutation per row
    return order < count(ratio, n)


def ranked_mask(scores: torch.Tensor, ratio: float, most: bool = True) -> torch.Tensor:
    """The round(ratio * N) patches of highest (most=True) or lowest score. (B, N) -> (B, N) bool."""
    m = count(ratio, scores.shape[1])
    rank = scores.argsort(1, descending=most).argsort(1)  # (B, N) rank of each patch, 0 = first masked
    return rank < m


def replace_patches(x: torch.Tensor, masked: torch.Tensor, patch: int, value: torch.Tensor) -> torch.Tensor:
    """Images with the masked patches set to `value`.

    Args:
        x: (B, C, H, W) model input.
        masked: (B, N) bool over the (H/p, W/p) grid, row-major.
        patch: patch side p.
        value: (C,) the fill of every channel, in input space.

    Returns:
        (B, C, H, W).
    """
    b, c, h, w = x.shape
    m = masked.view(b, 1, h // patch, w // patch).to(x.dtype)  # (B, 1, gh, gw)
    m = m.repeat_interleave(patch, 2).repeat_interleave(patch, 3)  # (B, 1, H, W)
    return x * (1 - m) + value.to(x).view(1, c, 1, 1) * m


def kept_indices(masked: torch.Tensor) -> torch.Tensor:
    """The unmasked patch indices of each image, in order. (B, N) bool -> (B, K) long.

    Every image must keep the same number K of patches (a batch is one tensor).
    """
    keep = ~masked
    k = keep.sum(1)
    if bool((k != k[0]).any()):
        raise ValueError(f"token dropping needs the same number of kept patches per image, got {k.tolist()}")
    return keep.nonzero()[:, 1].view(len(masked), int(k[0]))


def masked_logits(model, x: torch.Tensor, masked: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """The logits of `model` (a `syllabus.nn.vit` model) on x without the masked patches:
    replaced by `fill` (C,), or their tokens dropped when `fill` is None."""
    if fill is None:
        return model(x, keep=kept_indices(masked))
    return model(replace_patches(x, masked, model.patch_size, fill))
