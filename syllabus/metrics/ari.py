"""Segmentation scores of object discovery, batched in torch: ARI, foreground ARI, mean IoU.

Public API:
    contingency(true, pred, ignore=None) -> (B, T, P) float64 pixel counts
    adjusted_rand_index(true, pred, ignore_background=False) -> (B,) float64
    fg_ari(true, pred) -> (B,)   ARI over the pixels whose true id is not 0 (the background)
    mean_iou(true, pred) -> (B,) mean over true segments of the IoU after Hungarian matching
    segment_scores(true, pred) -> {"ari", "fg_ari", "miou"}: batch means as floats
    masks_to_ids(masks) -> (B, H, W) ids: argmax over slots of soft masks (B, K, H, W)

``true`` and ``pred`` are integer segment ids of the same shape, (B, H, W) or (B, N); 0 in
``true`` is the background. ARI is computed exactly as scikit-learn's ``adjusted_rand_score``
of each image (pair-confusion counts, 1.0 when both labelings agree on every pair, which
includes an image without foreground pixels in FG-ARI), so the two agree to round-off.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _flat_ids(ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(ids)
    if ids.is_floating_point() or ids.dim() < 2:
        raise ValueError(f"segment ids must be an integer tensor (B, ...), got {ids.dtype} {tuple(ids.shape)}")
    return ids.reshape(ids.shape[0], -1)  # (B, N), any integer dtype


def contingency(true: torch.Tensor, pred: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel counts n_ij of true segment i and predicted segment j in each image.

    Args:
        true: (B, ...) integer ids >= 0.
        pred: integer ids >= 0, same shape as ``true``.
        ignore: optional bool, same shape: pixels left out of the counts.

    Returns:
        (B, T, P) float64, T = max(true) + 1 and P = max(pred) + 1 over the batch.
    """
    t, p = _flat_ids(true), _flat_ids(pred)  # (B, N) each
    if t.shape != p.shape:
        raise ValueError(f"true and predicted ids differ in shape: {tuple(t.shape)} vs {tuple(p.shape)}")
    b, _ = t.shape
    (t_min, t_max), (p_min, p_max) = (torch.aminmax(x) if x.numel() else (0, 0) for x in (t, p))
    if min(int(t_min), int(p_min)) < 0:
        raise ValueError("segment ids must be >= 0")
    n_t, n_p = int(t_max) + 1, int(p_max) + 1
    cells = n_t * n_p
    dtype = torch.int32 if b * cells < 2**31 - 1 else torch.int64  # half the memory traffic when it fits
    index = t.to(dtype) * n_p  # (B, N): the cell of each pixel, then offset by its image
    index += p.to(dtype)
    index += torch.arange(b, device=t.device, dtype=dtype)[:, None] * cells
    if ignore is not None:
        index.masked_fill_(torch.as_tensor(ignore).reshape(b, -1).bool(), b * cells)  # one spare bin, dropped
    counts = torch.bincount(index.reshape(-1), minlength=b * cells + 1)[: b * cells]
    return counts.reshape(b, n_t, n_p).double()


def _ari_from_contingency(n: torch.Tensor) -> torch.Tensor:
    """scikit-learn's pair-confusion form of the ARI, per image. (B, T, P) -> (B,)."""
    total = n.sum((1, 2))  # (B,)
    sum_sq = (n * n).sum((1, 2))  # (B,)
    rows_sq = n.sum(2).pow(2).sum(1)  # (B,) sum_i a_i^2
    cols_sq = n.sum(1).pow(2).sum(1)  # (B,) sum_j b_j^2
    tp = sum_sq - total  # pairs together in both (x2, as scikit-learn counts ordered pairs)
    fp = cols_sq - sum_sq  # together in pred only
    fn = rows_sq - sum_sq  # together in true only
    tn = total * total - fp - fn - sum_sq
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    ari = 2.0 * (tp * tn - fn * fp) / denominator.clamp_min(1.0)
    return torch.where((fn == 0) & (fp == 0), torch.ones_like(ari), ari)


def adjusted_rand_index(true: torch.Tensor, pred: torch.Tensor, ignore_background: bool = False) -> torch.Tensor:
    """ARI of each image between true and predicted segment ids. (B, ...) x2 -> (B,) float64.

    With ``ignore_background`` the pixels whose true id is 0 are left out (foreground ARI).
    """
    true = torch.as_tensor(true)
    ignore = (true == 0) if ignore_background else None
    return _ari_from_contingency(contingency(true, pred, ignore))


def fg_ari(true: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Foreground ARI: ARI over the pixels of objects only (true id != 0). (B,) float64."""
    return adjusted_rand_index(true, pred, ignore_background=True)


def mean_iou(true: torch.Tensor, pred: torch.Tensor, include_background: bool = True) -> torch.Tensor:
    """Mean IoU over the true segments present, each matched to at most one predicted segment.

    The matching maximises the summed IoU (SciPy's ``linear_sum_assignment``); a true segment
    left without a partner scores 0. As in ClevrTex (Karazija et al. 2021) the background counts
    as a segment unless ``include_background=False``. Returns (B,) float64.
    """
    n = contingency(true, pred)  # (B, T, P)
    area_t, area_p = n.sum(2), n.sum(1)  # (B, T), (B, P)
    iou = (n / (area_t[:, :, None] + area_p[:, None, :] - n).clamp_min(1.0)).cpu().numpy()  # (B, T, P)
    present = (area_t > 0).cpu().numpy()  # (B, T)
    if not include_background:
        present[:, 0] = False
    scores = np.zeros(len(iou))
    for b, (matrix, rows) in enumerate(zip(iou, present, strict=True)):
        if rows.any():
            cost = matrix[rows]  # (T', P)
            r, c = linear_sum_assignment(cost, maximize=True)
            scores[b] = cost[r, c].sum() / rows.sum()
        else:
            scores[b] = np.nan
    return torch.from_numpy(scores)


def masks_to_ids(masks: torch.Tensor) -> torch.Tensor:
    """Soft masks over K slots -> hard segment ids. (B, K, H, W) or (B, K, 1, H, W) -> (B, H, W)."""
    if masks.dim() == 5:
        masks = masks.squeeze(2)
    return masks.argmax(1)


def segment_scores(true: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    """Batch means of ARI, FG-ARI and mIoU (NaN images, without any segment, skipped)."""
    return {"ari": float(adjusted_rand_index(true, pred).mean()),
            "fg_ari": float(fg_ari(true, pred).mean()),
            "miou": float(np.nanmean(mean_iou(true, pred).numpy()))}
