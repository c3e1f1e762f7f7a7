"""Data and pretrained weights of `vit-analysis`: `shapes` with object masks (embedded), CIFAR-10
through torchvision (fetched only with `data.download=true`), random `fake` images standing in
for CIFAR-10 in tests, and transformers' ViT (fetched only with `model.download=true`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from syllabus.data.images import SHAPES_MEAN, SHAPES_STD, ImageDataConfig, check_image_data, image_splits
from syllabus.data.paths import data_dir
from syllabus.errors import UsageError

DATASETS = ("shapes", "cifar10", "fake")
VIT_MEAN, VIT_STD = 0.5, 0.5  # the input statistics of Google's ViT-B/16 checkpoints
FAKE_CLASSES = 10


@dataclass
class ViTData:
    """splits (train augmented), eval_splits, classes, info; `black` (C,) is a black pixel in input
    space; `unnormalize` maps model input back to RGB in [0, 1]."""

    splits: dict[str, Dataset]
    eval_splits: dict[str, Dataset]
    classes: list[str]
    info: dict
    black: torch.Tensor
    unnormalize: Callable[[torch.Tensor], torch.Tensor]


def _stats(mean: float, std: float) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    black = torch.full((3,), -mean / std)
    return black, lambda x: (x * std + mean).clamp(0, 1)


def cifar_root(cfg) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else data_dir(cfg.dir or None) / "cifar"


def _shapes_config(cfg) -> ImageDataConfig:
    return ImageDataConfig(name="shapes", dir=cfg.dir, image_size=cfg.image_size, n_train=cfg.n_train,
                           n_val=cfg.n_val, n_test=cfg.n_test, augment=cfg.augment, num_workers=cfg.num_workers,
                           seed=cfg.seed)


def check_data(cfg) -> None:
    """Fail before training when CIFAR-10 is missing (and may not be fetched) or a size is wrong."""
    if cfg.name == "shapes":
        check_image_data(_shapes_config(cfg))
    elif cfg.name == "cifar10" and not cfg.download and not (cifar_root(cfg) / "cifar-10-batches-py").is_dir():
        raise UsageError(f"CIFAR-10 not found under {cifar_root(cfg)}; fetch it with --set data.download=true, "
                         "or point --set data.root at the folder holding cifar-10-batches-py")
    elif cfg.name == "fake" and min(cfg.n_train, cfg.n_test) < 1:
        raise UsageError("data.name=fake needs data.n_train and data.n_test of at least 1")


def _transforms(size: int, augment: bool):
    from torchvision import transforms as T

    plain = [T.Resize(size, antialias=True), T.ToTensor(), T.Normalize((VIT_MEAN,) * 3, (VIT_STD,) * 3)]
    return T.Compose(([T.RandomHorizontalFlip()] if augment else []) + plain), T.Compose(plain)


def _cifar(cfg) -> tuple[dict, dict, list[str]]:
    from torchvision.datasets import CIFAR10

    train_tf, eval_tf = _transforms(cfg.image_size, cfg.augment)
    root = str(cifar_root(cfg))
    try:
        train_aug = CIFAR10(root, train=True, transform=train_tf, download=cfg.download)
        train_eval = CIFAR10(root, train=True, transform=eval_tf)
        test = CIFAR10(root, train=False, transform=eval_tf)
    except RuntimeError as err:
        raise UsageError(f"CIFAR-10 not readable under {root} ({err}); "
                         "fetch it with --set data.download=true") from None
    order = np.random.default_rng(cfg.seed).permutation(len(train_aug))  # val carved from train
    val, rest = order[:cfg.n_val], order[cfg.n_val:]
    train = rest[:cfg.n_train] if cfg.n_train else rest
    test_idx = np.arange(min(cfg.n_test, len(test)) if cfg.n_test else len(test))
    evals = {"train": Subset(train_eval, train), "val": Subset(train_eval, val), "test": Subset(test, test_idx)}
    return {**evals, "train": Subset(train_aug, train)}, evals, list(train_aug.classes)


def _fake(cfg) -> tuple[dict, dict, list[str]]:
    from torchvision.datasets import FakeData

    train_tf, eval_tf = _transforms(cfg.image_size, cfg.augment)
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    offsets = {"train": 0, "val": 10_000, "test": 20_000}
    make = lambda s, tf: FakeData(counts[s], (3, cfg.image_size, cfg.image_size), FAKE_CLASSES, tf,
                                  random_offset=offsets[s] + cfg.seed)
    evals = {s: make(s, eval_tf) for s in counts}
    return {**evals, "train": make("train", train_tf)}, evals, [f"class {k}" for k in range(FAKE_CLASSES)]


def vit_data(cfg) -> ViTData:
    """The splits of `cfg.name`; shapes items carry their object mask as a third element."""
    if cfg.name == "shapes":
        d = image_splits(_shapes_config(cfg), with_masks=True)
        return ViTData(d.splits, d.eval_splits, d.classes, d.info, *_stats(SHAPES_MEAN, SHAPES_STD))
    splits, evals, classes = (_cifar if cfg.name == "cifar10" else _fake)(cfg)
    info = {"dataset": cfg.name, "sizes": {s: len(ds) for s, ds in evals.items()}}
    if cfg.name == "cifar10":
        info["root"] = str(cifar_root(cfg))
    return ViTData(splits, evals, classes, info, *_stats(VIT_MEAN, VIT_STD))


def transformers_vit(m, num_classes: int, image_size: int) -> torch.nn.Module:
    """transformers' ViTForImageClassification with eager attention: `m.name` pretrained (a new
    head of `num_classes`), or a random model of the sizes in `m` when `m.pretrained` is off."""
    from transformers import ViTConfig, ViTForImageClassification

    if not m.pretrained:
        config = ViTConfig(hidden_size=m.dim, num_hidden_layers=m.depth, num_attention_heads=m.heads,
                           intermediate_size=int(m.dim * m.mlp_ratio), image_size=image_size,
                           patch_size=m.patch_size, num_labels=num_classes, attn_implementation="eager")
        return ViTForImageClassification(config)
    try:
        return ViTForImageClassification.from_pretrained(
            m.name, num_labels=num_classes, ignore_mismatched_sizes=True, attn_implementation="eager",
            local_files_only=not m.download)
    except OSError as err:
        raise UsageError(f"ViT weights {m.name!r} not found ({str(err).splitlines()[0]}); fetch them with "
                         "--set model.download=true, or point --set model.name at a folder with config.json "
                         "and the weights") from None
