"""Features from the end of every stage of a ResNet, and how class structure grows with depth.

Works on this package's CIFAR-style `syllabus.nn.resnet.ResNet` (stem, `stages[i]`) and on
torchvision's ResNets (stem ending in `maxpool`, `layer1..layer4`): forward hooks on the stage
modules collect each stage's output map, average-pooled to a `pool` x `pool` grid and flattened,
so one forward pass yields every level. Per level: a t-SNE map (scikit-learn), a silhouette
score and a linear-probe accuracy (`syllabus.explain.probes`), and linear CKA between levels
(`syllabus.metrics.cka`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from syllabus.explain.probes import linear_probe, silhouette
from syllabus.metrics.cka import cka_matrix
from syllabus.threads import small_blas


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Level name -> the module whose output ends that level: "stem", "stage1", ..."""
    if hasattr(model, "stages") and hasattr(model, "stem"):  # syllabus.nn.resnet.ResNet
        return {"stem": model.stem, **{f"stage{i + 1}": s for i, s in enumerate(model.stages)}}
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "maxpool"):  # torchvision
        return {"stem": model.maxpool, **{f"stage{i}": getattr(model, f"layer{i}") for i in range(1, 5)}}
    raise TypeError(f"{type(model).__name__} is neither syllabus' ResNet nor a torchvision ResNet")


def stage_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The residual blocks of each stage, stage by stage (the stem has none)."""
    return [list(m.children()) for name, m in stage_modules(model).items() if name != "stem"]


def pool_map(h: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * pool * pool): average over a pool x pool grid, flattened."""
    return F.adaptive_avg_pool2d(h, pool).flatten(1)


class StageFeatures:
    """Forward hooks that keep every level's pooled output of the last forward pass.

    Use as a context manager (hooks are removed on exit) or call `release()`.

    Args:
        model: a ResNet `stage_modules` knows.
        pool: side of the average-pooling grid (1: global average pooling).
    """

    def __init__(self, model: nn.Module, pool: int = 1):
        self.pool = pool
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in stage_modules(model).items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = pool_map(output.detach(), self.pool)  # (B, D)

        return hook

    def release(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> StageFeatures:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@torch.no_grad()
def extract_features(model: nn.Module, batches: Iterable, pool: int = 1,
                     max_examples: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every level's features over `batches` of (image, label, ...), in eval mode (mode restored).

    Returns:
        ({level: (N, D_level) float32}, labels (N,) int64).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    seen = 0
    try:
        with StageFeatures(model, pool) as hooks:
            for x, y, *_ in batches:
                model(x.to(device))
                for name, f in hooks.outputs.items():
                    feats.setdefault(name, []).append(f.float().cpu().numpy())
                labels.append(np.asarray(y))
                seen += len(x)
                if max_examples is not None and seen >= max_examples:
                    break
    finally:
        model.train(was_training)
    n = max_examples if max_examples is not None else seen
    return {k: np.concatenate(v)[:n] for k, v in feats.items()}, np.concatenate(labels)[:n].astype(np.int64)


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000) -> np.ndarray:
    """(N, D) -> (N, 2) t-SNE map (scikit-learn), after PCA to at most 50 dimensions."""
    x = np.asarray(x, dtype=np.float64)
    dims = min(50, x.shape[1], len(x))
    with small_blas():
        if dims < x.shape[1]:
            x = PCA(dims, random_state=seed).fit_transform(x)  # (N, dims)
        tsne = TSNE(2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca", learning_rate="auto",
                    max_iter=max_iter, random_state=seed)
        return tsne.fit_transform(x).astype(np.float32)


def hierarchy_scores(train: dict[str, np.ndarray], train_y: np.ndarray, test: dict[str, np.ndarray],
                     test_y: np.ndarray, seed: int = 0, max_points: int = 2000) -> dict:
    """Per level: linear-probe accuracy (fit on train, scored on test) and silhouette of the test features.

    Returns:
        {"levels": [names], "probe_accuracy": [...], "probe_train_accuracy": [...], "silhouette": [...],
         "dims": [...], "cka": (L, L) nested list of linear CKA between levels on the test features}.
    """
    levels = list(test)
    out: dict = {"levels": levels, "probe_accuracy": [], "probe_train_accuracy": [], "silhouette": [], "dims": []}
    for name in levels:
        probe = linear_probe(train[name], train_y, test[name], test_y, seed=seed)
        out["probe_accuracy"].append(probe["accuracy"])
        out["probe_train_accuracy"].append(probe["train_accuracy"])
        out["silhouette"].append(silhouette(test[name], test_y, max_points=max_points, seed=seed))
        out["dims"].append(int(test[name].shape[1]))
    out["cka"] = cka_matrix([test[name] for name in levels]).tolist()
    return out
