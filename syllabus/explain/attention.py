"""Where a ViT's CLS token looks: raw attention maps and attention rollout (Abnar & Zuidema 2020).

Raw maps: the last block's attention from the CLS token to each patch, one map per head,
`A[:, :, 0, 1:]`.

Rollout: attention flows through the residual stream as well as through the softmax, so each
block's head-averaged weights get the identity added and their rows re-normalised,

    Â_l = norm_rows(0.5 * mean_h A_l + 0.5 * I)           (Abnar & Zuidema 2020, section 3)

and the attention of the output tokens to the input tokens is the product R = Â_L ... Â_2 Â_1.
Row 0 of R, without its CLS column, is the rollout map over the patches.

Maps are over the tokens that were fed; `to_grid` puts them back on the patch grid (dropped
patches get 0) and `to_pixels` spreads each patch's value over its pixels, so the share of
mass in an object mask is the attention-weighted share of each patch's pixels on the object.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

HEAD_FUSIONS = {
    "mean": lambda a: a.mean(1),
    "max": lambda a: a.amax(1),
    "min": lambda a: a.amin(1),
}


def cls_attention(weights: torch.Tensor) -> torch.Tensor:
    """Per-head attention of the CLS token to the patches. (B, h, 1+K, 1+K) -> (B, h, K)."""
    return weights[:, :, 0, 1:]


def rollout(attentions: Sequence[torch.Tensor], residual: bool = True, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout over the blocks in order.

    Args:
        attentions: per block, (B, h, N, N) softmax weights (rows sum to 1), first block first.
        residual: add the identity for the skip connection (0.5 A + 0.5 I) and re-normalise rows.
        head_fusion: how heads are combined: "mean" (the paper), "max" or "min".

    Returns:
        (B, N, N): R = Â_L ... Â_1, row i the attention of output token i to the input tokens.
    """
    if not attentions:
        raise ValueError("rollout needs the attention weights of at least one block")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {sorted(HEAD_FUSIONS)}, got {head_fusion!r}")
    b, _, n, _ = attentions[0].shape
    eye = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device)  # (N, N)
    result = eye.expand(b, n, n)
    for weights in attentions:
        a = HEAD_FUSIONS[head_fusion](weights)  # (B, N, N)
        if residual:
            a = 0.5 * a + 0.5 * eye
            a = a / a.sum(-1, keepdim=True)
        result = a @ result  # (B, N, N)
    return result


def rollout_cls(attentions: Sequence[torch.Tensor], **kwargs) -> torch.Tensor:
    """The rollout map of the CLS token over the patches. -> (B, K)."""
    return rollout(attentions, **kwargs)[:, 0, 1:]


def to_grid(values: torch.Tensor, grid: tuple[int, int], keep: torch.Tensor | None = None) -> torch.Tensor:
    """Token values back on the patch grid; patches not kept get 0.

    Args:
        values: (B, ..., K), one value per fed patch token (in the order of `keep`).
        grid: (gh, gw) with gh * gw = N.
        keep: (B, K) the patch index of each value, or None when K = N in order.

    Returns:
        (B, ..., gh, gw).
    """
    n = grid[0] * grid[1]
    if keep is not None:
        full = values.new_zeros(*values.shape[:-1], n)  # (B, ..., N)
        index = keep.view(keep.shape[0], *([1] * (values.ndim - 2)), keep.shape[1]).expand_as(values)
        values = full.scatter(-1, index, values)
    if values.shape[-1] != n:
        raise ValueError(f"{values.shape[-1]} values for a {grid[0]}x{grid[1]} grid")
    return values.reshape(*values.shape[:-1], *grid)


def to_pixels(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Each patch's value over its p x p pixels. (..., gh, gw) -> (..., gh*p, gw*p)."""
    return maps.repeat_interleave(patch, -2).repeat_interleave(patch, -1)


def smooth(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling for display, min-max normalised per map. (B, gh, gw) -> (B, *size) in [0, 1]."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).min(1).values[:, None, None]
    high = up.flatten(1).max(1).values[:, None, None]
    return (up - low) / (high - low + 1e-7)


@torch.no_grad()
def attention_maps(model, x: torch.Tensor, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Both maps of a `syllabus.nn.vit` model, on the patch grid.

    Returns:
        {"heads": (B, h, gh, gw) last-block CLS attention per head, "rollout": (B, gh, gw),
         "logits": (B, classes)}.
    """
    feats = model.forward_features(x, keep, attentions=True)
    return {"heads": to_grid(cls_attention(feats.attentions[-1]), model.grid, keep),
            "rollout": to_grid(rollout_cls(feats.attentions), model.grid, keep),
            "logits": model.forward_head(feats)}
