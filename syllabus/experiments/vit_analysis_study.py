"""The analyses of `vit-analysis` on a trained ViT (ours or transformers'), as arrays and numbers.

Each function takes a model with the `syllabus.nn.vit` interface (`forward_features`,
`forward_head`, `grid`, `patch_size`, `embed`) and tensors already on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from syllabus.explain.attention import cls_attention, rollout_cls, to_grid, to_pixels
from syllabus.explain.masking import PATTERNS, count, masked_logits, pattern_mask, random_mask, ranked_mask
from syllabus.explain.probes import linear_probe
from syllabus.metrics.localization import (
    baseline_scores,
    difference_interval,
    localization_scores,
    mean_and_halfwidth,
)


@dataclass
class Images:
    """A fixed set of images: x (N, C, H, W) model input, y (N,), masks (N, H, W) bool or None."""

    x: torch.Tensor
    y: torch.Tensor
    masks: np.ndarray | None = None


def take(dataset: Iterable, n: int) -> Images:
    """The first n items of a dataset of (image, label[, mask])."""
    xs, ys, ms = [], [], []
    for i, item in enumerate(dataset):
        if i == n:
            break
        xs.append(item[0])
        ys.append(int(item[1]))
        if len(item) > 2:
            ms.append(np.asarray(item[2]) > 0.5)
    return Images(torch.stack(xs), torch.tensor(ys), np.stack(ms) if ms else None)


def _chunks(n: int, size: int) -> Iterable[slice]:
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


@torch.no_grad()
def inspect(model, x: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """One pass with attention weights and hidden states.

    Returns:
        logits (N, K); heads (N, h, gh, gw), the last block's CLS attention per head; rollout
        (N, gh, gw); cls and mean (L+1, N, D): the CLS token and the mean of the patch tokens
        after the embedding (layer 0) and after every block.
    """
    parts: dict[str, list] = {k: [] for k in ("logits", "heads", "rollout", "cls", "mean")}
    for s in _chunks(len(x), batch_size):
        xb = x[s].to(device)
        feats = model.forward_features(xb, attentions=True, hidden=True)
        layers = torch.stack([model.embed(xb), *feats.hidden])  # (L+1, B, 1+N, D)
        parts["logits"].append(model.forward_head(feats))
        parts["heads"].append(to_grid(cls_attention(feats.attentions[-1]), model.grid))
        parts["rollout"].append(to_grid(rollout_cls(feats.attentions), model.grid))
        parts["cls"].append(layers[:, :, 0])
        parts["mean"].append(layers[:, :, 1:].mean(2))
    dims = {"logits": 0, "heads": 0, "rollout": 0, "cls": 1, "mean": 1}
    return {k: torch.cat(v, dims[k]).float().cpu().numpy() for k, v in parts.items()}


@torch.no_grad()
def layer_features(model, x: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """cls and mean (L+1, N, D) features without attention weights (for probe training)."""
    cls, mean = [], []
    for s in _chunks(len(x), batch_size):
        xb = x[s].to(device)
        layers = torch.stack([model.embed(xb), *model.forward_features(xb, hidden=True).hidden])  # (L+1, B, 1+N, D)
        cls.append(layers[:, :, 0])
        mean.append(layers[:, :, 1:].mean(2))
    return {"cls": torch.cat(cls, 1).float().cpu().numpy(), "mean": torch.cat(mean, 1).float().cpu().numpy()}


def top_k(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes and their softmax probabilities. (N, K) -> (N, k), (N, k)."""
    z = logits - logits.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)  # (N, K)
    order = np.argsort(-prob, 1)[:, :k]
    return order, np.take_along_axis(prob, order, 1)


# --- attention inside the object mask ---


def _interval(values: np.ndarray) -> dict[str, float]:
    mean, half = mean_and_halfwidth(values)
    return {"mean": mean, "low": mean - half, "high": mean + half}


def localisation(maps: dict[str, np.ndarray], masks: np.ndarray, patch: int, sigma: float) -> dict:
    """Share of each map's mass in the object mask and the pointing game, against the baselines.

    Args:
        maps: name -> (N, gh, gw) non-negative maps on the patch grid.
        masks: (N, H, W) bool object masks, H = gh * patch.
        patch: patch side.
        sigma: of the centred-Gaussian baseline, a fraction of the side.

    Returns:
        {map or baseline name: {"energy": {mean, low, high}, "pointing": {...}}, and for each map
        "vs_uniform"/"vs_gaussian": (difference of mean energy, low, high) with Welch 95% bounds}.
    """
    base = baseline_scores(masks, sigma)
    out: dict = {name: {k: _interval(v) for k, v in s.items()} for name, s in base.items()}
    for name, grid in maps.items():
        scores = localization_scores(to_pixels(torch.as_tensor(grid), patch).numpy(), masks)
        out[name] = {k: _interval(v) for k, v in scores.items()}
        for b in base:
            out[name][f"vs_{b}"] = difference_interval(scores["energy"], base[b]["energy"])
    return out


# --- patch masking ---


@torch.no_grad()
def masked_accuracy(model, images: Images, make_mask: Callable[[slice], torch.Tensor], fill: torch.Tensor | None,
                    batch_size: int, device: torch.device) -> float:
    """Accuracy with the patches of `make_mask(rows)` (B, N) bool removed (`fill`, or dropped if None)."""
    correct = 0
    for s in _chunks(len(images.x), batch_size):
        logits = masked_logits(model, images.x[s].to(device), make_mask(s).to(device), fill)
        correct += int((logits.argmax(1).cpu() == images.y[s]).sum())
    return correct / len(images.x)


def accuracy_of(logits, labels: torch.Tensor) -> float:
    """Share of rows whose argmax is the label, counted as `masked_accuracy` counts."""
    return int((torch.as_tensor(logits).argmax(1) == labels).sum()) / len(labels)


def clean_accuracy(model, images: Images, batch_size: int, device: torch.device) -> float:
    """Accuracy with nothing masked: every ratio-0 point of every curve (no fill changes an image then)."""
    return masked_accuracy(model, images, lambda s: torch.zeros(s.stop - s.start, model.num_patches, dtype=torch.bool),
                           None, batch_size, device)


def random_curves(model, images: Images, ratios: list[float], seeds: list[int], fills: dict, batch_size: int,
                  device: torch.device, clean: float) -> dict[str, list[list[float]]]:
    """{how: accuracy (seeds, ratios)} with random patches masked; each seed draws one mask per image.
    A ratio that masks no patch scores `clean`, the accuracy with nothing masked."""
    n, curves = model.num_patches, {}
    for how, fill in fills.items():
        curves[how] = []
        for seed in seeds:
            row = []
            for ratio in ratios:
                if count(ratio, n) == 0:
                    row.append(clean)
                    continue
                masks = random_mask(len(images.x), n, ratio, torch.Generator().manual_seed(seed))  # (N_img, N)
                row.append(masked_accuracy(model, images, lambda s, m=masks: m[s], fill, batch_size, device))
            curves[how].append(row)
    return curves


def pattern_table(model, images: Images, fills: dict, batch_size: int, device: torch.device) -> dict:
    """{how: {pattern: accuracy}} with the systematic patterns masked, and each pattern's masked share."""
    grids = {p: pattern_mask(p, model.grid).flatten() for p in PATTERNS}  # (N,) each
    table = {how: {p: masked_accuracy(model, images, lambda s, g=g: g.expand(s.stop - s.start, -1), fill,
                                      batch_size, device) for p, g in grids.items()}
             for how, fill in fills.items()}
    return {"accuracy": table, "share": {p: float(g.float().mean()) for p, g in grids.items()}}


def ranked_curves(model, images: Images, scores: np.ndarray, ratios: list[float], fills: dict, batch_size: int,
                  device: torch.device, clean: float) -> dict[str, dict[str, list[float]]]:
    """{how: {"most": [...], "least": [...]}}: the most- or least-attended patches masked first,
    ranked by `scores` (N_img, N), e.g. each image's rollout map; `clean` as in `random_curves`."""
    scores = torch.as_tensor(scores).flatten(1)

    def curve(fill: torch.Tensor | None, most: bool) -> list[float]:
        return [clean if count(r, scores.shape[1]) == 0 else
                masked_accuracy(model, images, lambda s, r=r: ranked_mask(scores[s], r, most), fill, batch_size,
                                device) for r in ratios]

    return {how: {"most": curve(fill, True), "least": curve(fill, False)} for how, fill in fills.items()}


# --- CLS against mean pooling ---


def probe_layers(train: dict[str, np.ndarray], train_y: np.ndarray, test: dict[str, np.ndarray], test_y: np.ndarray,
                 seed: int = 0, max_iter: int = 300) -> dict[str, list[float]]:
    """Linear probes on the CLS and the mean-pooled features of every layer.

    Returns:
        {"cls": [accuracy per layer], "mean": [...], "agreement": [share of test images on which
         the two probes predict the same class], "both_right": [...]} (layer 0 = the embedding).
    """
    out: dict[str, list[float]] = {"cls": [], "mean": [], "agreement": [], "both_right": []}
    for layer in range(len(train["cls"])):
        preds = {}
        for kind in ("cls", "mean"):
            fit = linear_probe(train[kind][layer], train_y, test[kind][layer], test_y, max_iter=max_iter, seed=seed)
            out[kind].append(fit["accuracy"])
            preds[kind] = fit["pred"]
        out["agreement"].append(float((preds["cls"] == preds["mean"]).mean()))
        out["both_right"].append(float(((preds["cls"] == test_y) & (preds["mean"] == test_y)).mean()))
    return out
